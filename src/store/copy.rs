//! Rows in PostgreSQL's binary `COPY … FROM STDIN (FORMAT binary)` format:
//! the fastest way to insert many new rows (the server batches them into
//! pages; no statement to plan, no arrays to unpack, and no text to parse:
//! a timestamp goes as its 8 bytes instead of 27 characters that the server
//! would parse back, which was more than half of the text `COPY`'s cost
//! before its indexes).
//!
//! The format (PostgreSQL documentation, "COPY", *Binary Format*): a
//! signature and two 32-bit words, then each row as a 16-bit column count and
//! each column as a 32-bit length (-1 for NULL) and its bytes in the type's
//! binary send format, then a count of -1. Every value must be the column's
//! exact type (an `int2` column takes 2 bytes, not 4): the statement names
//! the columns, and [`CopyValue`] is implemented only for the Rust types of
//! the column types written.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// The binary `COPY` signature, flags (none) and header extension length (0).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// PostgreSQL's epoch for dates and timestamps, 2000-01-01, as days and
/// microseconds after the Unix epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400 * 1_000_000;
/// 2000-01-01 as days from the first day of the common era.
const CE_TO_PG_EPOCH_DAYS: i64 = 719_163 + PG_EPOCH_DAYS;

/// A buffer of rows in binary `COPY` format, for a statement ending with
/// `FROM STDIN (FORMAT binary)`.
#[derive(Debug)]
pub struct CopyRows {
    buf: Vec<u8>,
    /// Where the current row's column count goes, and the count so far.
    row_start: usize,
    columns: i16,
}

/// A value that can be written into a binary `COPY` column: its bytes in the
/// column type's binary format, without the length word.
pub trait CopyValue {
    /// Appends the value's bytes; `None` writes NULL.
    fn write_to(&self, out: &mut Vec<u8>) -> Option<()>;
}

impl CopyRows {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + HEADER.len() + 2);
        buf.extend_from_slice(HEADER);
        let row_start = buf.len();
        buf.extend_from_slice(&0i16.to_be_bytes());
        CopyRows {
            buf,
            row_start,
            columns: 0,
        }
    }

    /// Adds the next column of the current row.
    pub fn col(&mut self, value: impl CopyValue) -> &mut Self {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        let len = match value.write_to(&mut self.buf) {
            Some(()) => i32::try_from(self.buf.len() - at - 4).expect("a COPY value under 2 GiB"),
            None => -1,
        };
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.columns += 1;
        self
    }

    /// Ends the current row.
    pub fn end_row(&mut self) {
        self.buf[self.row_start..self.row_start + 2].copy_from_slice(&self.columns.to_be_bytes());
        self.row_start = self.buf.len();
        self.columns = 0;
        self.buf.extend_from_slice(&0i16.to_be_bytes());
    }

    /// The whole `COPY` data: the rows ended so far and the trailer.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.buf.truncate(self.row_start);
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

/// `text`: the UTF-8 bytes as they are.
impl CopyValue for &str {
    fn write_to(&self, out: &mut Vec<u8>) -> Option<()> {
        out.extend_from_slice(self.as_bytes());
        Some(())
    }
}

/// `integer`.
impl CopyValue for i32 {
    fn write_to(&self, out: &mut Vec<u8>) -> Option<()> {
        out.extend_from_slice(&self.to_be_bytes());
        Some(())
    }
}

/// `smallint`.
impl CopyValue for i16 {
    fn write_to(&self, out: &mut Vec<u8>) -> Option<()> {
        out.extend_from_slice(&self.to_be_bytes());
        Some(())
    }
}

/// `boolean`.
impl CopyValue for bool {
    fn write_to(&self, out: &mut Vec<u8>) -> Option<()> {
        out.push(u8::from(*self));
        Some(())
    }
}

/// `date`: days since 2000-01-01.
impl CopyValue for NaiveDate {
    fn write_to(&self, out: &mut Vec<u8>) -> Option<()> {
        let days = i64::from(self.num_days_from_ce()) - CE_TO_PG_EPOCH_DAYS;
        out.extend_from_slice(&i32::try_from(days).ok()?.to_be_bytes());
        Some(())
    }
}

/// `timestamptz`: microseconds since 2000-01-01 00:00 UTC (what
/// `timestamptz` keeps; finer parts are cut, as the text form cut them).
impl CopyValue for DateTime<Utc> {
    fn write_to(&self, out: &mut Vec<u8>) -> Option<()> {
        out.extend_from_slice(&(self.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
        Some(())
    }
}

/// A `bytea` value, its bytes as they are.
pub struct Bytes<'a>(pub &'a [u8]);

impl CopyValue for Bytes<'_> {
    fn write_to(&self, out: &mut Vec<u8>) -> Option<()> {
        out.extend_from_slice(self.0);
        Some(())
    }
}

impl<T: CopyValue> CopyValue for Option<T> {
    fn write_to(&self, out: &mut Vec<u8>) -> Option<()> {
        self.as_ref()?.write_to(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_framed_as_postgresql_reads_them() {
        let mut rows = CopyRows::with_capacity(0);
        rows.col("xã")
            .col(Option::<i16>::None)
            .col(7i16)
            .col(true)
            .end_row();
        rows.col(Bytes(&[1, 2])).end_row();
        let bytes = rows.into_bytes();
        let mut want = HEADER.to_vec();
        want.extend_from_slice(&[0, 4]); // four columns
        want.extend_from_slice(&[0, 0, 0, 3, b'x', 0xc3, 0xa3]);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // NULL
        want.extend_from_slice(&[0, 0, 0, 2, 0, 7]);
        want.extend_from_slice(&[0, 0, 0, 1, 1]);
        want.extend_from_slice(&[0, 1, 0, 0, 0, 2, 1, 2]);
        want.extend_from_slice(&[0xff, 0xff]); // trailer
        assert_eq!(bytes, want);
    }

    #[test]
    fn no_rows_is_header_and_trailer() {
        let mut want = HEADER.to_vec();
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(CopyRows::with_capacity(8).into_bytes(), want);
    }

    #[test]
    fn dates_and_timestamps_count_from_2000() {
        let value = |v: &dyn CopyValue| {
            let mut out = Vec::new();
            v.write_to(&mut out).unwrap();
            out
        };
        let day = NaiveDate::from_ymd_opt(2000, 1, 2).unwrap();
        assert_eq!(value(&day), 1i32.to_be_bytes());
        let before = NaiveDate::from_ymd_opt(1999, 12, 31).unwrap();
        assert_eq!(value(&before), (-1i32).to_be_bytes());
        let at = "2000-01-01T00:00:01.000002Z"
            .parse::<DateTime<Utc>>()
            .unwrap();
        assert_eq!(value(&at), 1_000_002i64.to_be_bytes());
        let vn = "2026-07-01T08:30:00+07:00"
            .parse::<DateTime<Utc>>()
            .unwrap();
        // 9,678 days, 1 h 30 min.
        assert_eq!(
            value(&vn),
            ((9_678i64 * 86_400 + 5_400) * 1_000_000).to_be_bytes()
        );
    }
}
