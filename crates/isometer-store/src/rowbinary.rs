//! Rows kept as ClickHouse RowBinary from the moment they are recorded.
//!
//! The spool stores each row in the bytes ClickHouse reads, so shipping a batch copies
//! bytes instead of decoding and encoding every field again. Each row carries where its
//! `batch_id` column sits (the shipper writes the batch's id there) and its day (to ask
//! which rows of a batch in doubt landed); its key is its first column.

use crate::error::StoreError;
use crate::rows::Shipped;
use serde::Serialize;
use serde::ser::{self, Impossible};

/// Bytes a cleared buffer keeps at least (see [`RawRows::clear`]).
pub(crate) const KEPT_FLOOR: usize = 256 << 10;

/// Rows of one table, in RowBinary, back to back.
#[derive(Debug, Default, Clone)]
pub(crate) struct RawRows {
    bytes: Vec<u8>,
    rows: Vec<RawRow>,
}

#[derive(Debug, Clone, Copy)]
struct RawRow {
    start: usize,
    len: usize,
    /// Offset of the `batch_id` column within the row.
    batch_at: usize,
    /// Offset of the column a seal completes ([`SEALED_COLUMN`]) within the row, if any.
    sealed_at: Option<usize>,
    day: u16,
}

/// The column that a record's seal (see the spool) completes: the manifest's JSON.
pub(crate) const SEALED_COLUMN: &str = "signed";

impl RawRows {
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Empties the rows for reuse. The buffer keeps room for twice what it held, at least
    /// [`KEPT_FLOOR`] and at most twice `most` bytes: a steady stream of batches fills it
    /// again without growing it, and after a burst it shrinks back with the batches.
    /// `most` is the size at which a batch ends; the buffer of a full batch grew past it
    /// (to twice its size before the last row), and keeping that room is what saves the
    /// next full batch from copying `most` bytes into fresh pages once more.
    pub(crate) fn clear(&mut self, most: usize) {
        let most = most.saturating_mul(2);
        let keep = (self.bytes.len() * 2).clamp(KEPT_FLOOR.min(most), most);
        let keep_rows = self.rows.len() * 2;
        self.bytes.clear();
        self.bytes.shrink_to(keep);
        self.rows.clear();
        self.rows.shrink_to(keep_rows);
    }

    /// Bytes the buffer holds without growing.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The whole rows, ready to send.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends a typed row.
    pub(crate) fn push<T: Shipped>(&mut self, row: &T) -> Result<(), StoreError> {
        let start = self.bytes.len();
        let mut serializer = RowSerializer {
            out: &mut self.bytes,
            batch_at: None,
            sealed_at: None,
        };
        row.serialize(&mut serializer)?;
        let sealed_at = serializer.sealed_at.map(|at| at - start);
        let batch_at = serializer
            .batch_at
            .ok_or_else(|| StoreError::Corrupt(format!("{} rows have no batch_id", T::TABLE)))?;
        self.rows.push(RawRow {
            start,
            len: self.bytes.len() - start,
            batch_at: batch_at - start,
            sealed_at,
            day: row.day(),
        });
        Ok(())
    }

    /// Appends a row already in RowBinary (from the spool), checking its layout.
    fn push_raw(&mut self, row: &[u8], batch_at: usize, day: u16) -> Result<(), StoreError> {
        if batch_at + 8 > row.len() || key_of(row).is_none() {
            return Err(StoreError::Corrupt(
                "a spooled row is shorter than its layout says".into(),
            ));
        }
        self.rows.push(RawRow {
            start: self.bytes.len(),
            len: row.len(),
            batch_at,
            sealed_at: None,
            day,
        });
        self.bytes.extend_from_slice(row);
        Ok(())
    }

    /// [`RawRows::push_raw`] with `seal` appended to the string at `sealed_at`.
    fn push_sealed_raw(
        &mut self,
        row: &[u8],
        batch_at: usize,
        day: u16,
        sealed_at: usize,
        seal: &[u8],
    ) -> Result<(), StoreError> {
        let misplaced = || StoreError::Corrupt("a spooled row's sealed column is misplaced".into());
        let (len, width) = leb128_at(row, sealed_at).ok_or_else(misplaced)?;
        let end = (sealed_at + width)
            .checked_add(len)
            .filter(|&end| end <= batch_at && batch_at + 8 <= row.len())
            .ok_or_else(misplaced)?;
        if key_of(row).is_none() || sealed_at == 0 {
            return Err(misplaced());
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&row[..sealed_at]);
        put_leb128(&mut self.bytes, (len + seal.len()) as u64);
        self.bytes.extend_from_slice(&row[sealed_at + width..end]);
        self.bytes.extend_from_slice(seal);
        self.bytes.extend_from_slice(&row[end..]);
        let grown = self.bytes.len() - start - row.len();
        self.rows.push(RawRow {
            start,
            len: row.len() + grown,
            batch_at: batch_at + grown,
            sealed_at: None,
            day,
        });
        Ok(())
    }

    /// Writes `batch_id` into every row.
    pub(crate) fn stamp(&mut self, batch_id: u64) {
        for row in &self.rows {
            let at = row.start + row.batch_at;
            self.bytes[at..at + 8].copy_from_slice(&batch_id.to_le_bytes());
        }
    }

    /// Each row's key (its first column, a string).
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.rows
            .iter()
            .map(|r| key_of(&self.bytes[r.start..r.start + r.len]).unwrap_or_default())
    }

    /// The first and last day of the rows.
    pub(crate) fn days(&self) -> (u16, u16) {
        self.rows
            .iter()
            .fold((u16::MAX, 0), |(lo, hi), r| (lo.min(r.day), hi.max(r.day)))
    }

    /// Keeps the rows whose key `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let mut kept = RawRows::default();
        for r in &self.rows {
            let row = &self.bytes[r.start..r.start + r.len];
            if keep(key_of(row).unwrap_or_default()) {
                kept.rows.push(RawRow {
                    start: kept.bytes.len(),
                    ..*r
                });
                kept.bytes.extend_from_slice(row);
            }
        }
        *self = kept;
    }

    /// Writes the rows for the spool: count, then per row its length, `batch_id` offset,
    /// day and bytes.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.rows.len());
        for r in &self.rows {
            put_u32(out, r.len);
            put_u32(out, r.batch_at);
            out.extend_from_slice(&r.day.to_le_bytes());
            out.extend_from_slice(&self.bytes[r.start..r.start + r.len]);
        }
    }

    /// [`RawRows::encode`] for rows to be sealed in the spool: each row's entry also has,
    /// after its day, the offset of its [`SEALED_COLUMN`].
    pub(crate) fn encode_sealed(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        put_u32(out, self.rows.len());
        for r in &self.rows {
            let sealed_at = r
                .sealed_at
                .ok_or_else(|| StoreError::Corrupt(format!("a row has no {SEALED_COLUMN}")))?;
            put_u32(out, r.len);
            put_u32(out, r.batch_at);
            out.extend_from_slice(&r.day.to_le_bytes());
            put_u32(out, sealed_at);
            out.extend_from_slice(&self.bytes[r.start..r.start + r.len]);
        }
        Ok(())
    }

    /// Reads rows written by [`RawRows::encode_sealed`], followed by one seal per row
    /// (`len u32 | bytes`, as the spool writes them), from the front of `input`; each
    /// row's sealed column gets its seal appended.
    pub(crate) fn decode_sealed_into(&mut self, input: &mut &[u8]) -> Result<(), StoreError> {
        let count = take_u32(input)?;
        let mut rows = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let len = take_u32(input)?;
            let batch_at = take_u32(input)?;
            let day = u16::from_le_bytes(take(input, 2)?.try_into().unwrap_or_default());
            let sealed_at = take_u32(input)?;
            rows.push((take(input, len)?, batch_at, day, sealed_at));
        }
        for (row, batch_at, day, sealed_at) in rows {
            let len = take_u32(input)?;
            let seal = take(input, len)?;
            self.push_sealed_raw(row, batch_at, day, sealed_at, seal)?;
        }
        if input.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!(
                "{} bytes follow a record's seals",
                input.len()
            )))
        }
    }

    /// Reads rows written by [`RawRows::encode`] from the front of `input`.
    pub(crate) fn decode_into(&mut self, input: &mut &[u8]) -> Result<(), StoreError> {
        let count = take_u32(input)?;
        for _ in 0..count {
            let len = take_u32(input)?;
            let batch_at = take_u32(input)?;
            let day = u16::from_le_bytes(take(input, 2)?.try_into().unwrap_or_default());
            let row = take(input, len)?;
            self.push_raw(row, batch_at, day)?;
        }
        Ok(())
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
    if input.len() < n {
        return Err(StoreError::Corrupt("a spooled row is cut short".into()));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn take_u32(input: &mut &[u8]) -> Result<usize, StoreError> {
    let bytes = take(input, 4)?;
    Ok(u32::from_le_bytes(bytes.try_into().unwrap_or_default()) as usize)
}

/// The LEB128 number at `at` in `row`, and how many bytes it takes.
fn leb128_at(row: &[u8], at: usize) -> Option<(usize, usize)> {
    let (mut n, mut shift, mut width) = (0usize, 0u32, 0usize);
    loop {
        let byte = *row.get(at + width)?;
        width += 1;
        n |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some((n, width));
        }
        shift += 7;
    }
}

/// The first column of a row: a LEB128 length and UTF-8 bytes.
fn key_of(row: &[u8]) -> Option<&str> {
    let (len, at) = leb128_at(row, 0)?;
    std::str::from_utf8(row.get(at..at.checked_add(len)?)?).ok()
}

fn put_leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

impl ser::Error for StoreError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        StoreError::Corrupt(format!("cannot encode a row: {msg}"))
    }
}

/// RowBinary of the types our rows use: integers, floats, strings, bytes, `Option`
/// (Nullable) and flat structs. It notes where the `batch_id` field starts, and the
/// [`SEALED_COLUMN`].
struct RowSerializer<'a> {
    out: &'a mut Vec<u8>,
    batch_at: Option<usize>,
    sealed_at: Option<usize>,
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Corrupt(format!("rows hold no {what}"))
}

impl<'a> ser::Serializer for &mut RowSerializer<'a> {
    type Ok = ();
    type Error = StoreError;
    type SerializeSeq = Impossible<(), StoreError>;
    type SerializeTuple = Impossible<(), StoreError>;
    type SerializeTupleStruct = Impossible<(), StoreError>;
    type SerializeTupleVariant = Impossible<(), StoreError>;
    type SerializeMap = Impossible<(), StoreError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), StoreError>;

    fn serialize_bool(self, v: bool) -> Result<(), StoreError> {
        self.out.push(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), StoreError> {
        self.out.push(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), StoreError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, _: char) -> Result<(), StoreError> {
        Err(unsupported("char"))
    }
    fn serialize_str(self, v: &str) -> Result<(), StoreError> {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), StoreError> {
        put_leb128(self.out, v.len() as u64);
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), StoreError> {
        self.out.push(1);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), StoreError> {
        self.out.push(0);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), StoreError> {
        Err(unsupported("unit"))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), StoreError> {
        Err(unsupported("unit struct"))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), StoreError> {
        Err(unsupported("enum"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), StoreError> {
        Err(unsupported("enum"))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, StoreError> {
        Err(unsupported("array"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, StoreError> {
        Err(unsupported("tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, StoreError> {
        Err(unsupported("tuple"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, StoreError> {
        Err(unsupported("enum"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, StoreError> {
        Err(unsupported("map"))
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, StoreError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, StoreError> {
        Err(unsupported("enum"))
    }
}

impl<'a> ser::SerializeStruct for &mut RowSerializer<'a> {
    type Ok = ();
    type Error = StoreError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        if key == "batch_id" {
            self.batch_at = Some(self.out.len());
        } else if key == SEALED_COLUMN {
            self.sealed_at = Some(self.out.len());
        }
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// `INSERT INTO table(columns) FORMAT RowBinary` for rows of type `T`.
pub(crate) fn insert_sql<T: Shipped>() -> String {
    let columns: Vec<String> = <T as clickhouse::Row>::COLUMN_NAMES
        .iter()
        .map(|c| format!("`{c}`"))
        .collect();
    format!(
        "INSERT INTO {}({}) FORMAT RowBinary",
        T::TABLE,
        columns.join(",")
    )
}
