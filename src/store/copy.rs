//! Rows in PostgreSQL's `COPY … FROM STDIN` text format: the fastest way to
//! insert many new rows (the server batches them into pages; no statement to
//! plan, no arrays to unpack).

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// A buffer of rows in `COPY` text format (tab-separated, `\N` for NULL).
/// Made only by [`CopyRows::with_capacity`] (a derived default would start
/// its first row with a tab).
#[derive(Debug)]
pub struct CopyRows {
    buf: String,
    fresh: bool,
}

/// A value that can be written into a `COPY` text column.
pub trait CopyValue {
    fn write_to(&self, out: &mut String);
}

impl CopyRows {
    pub fn with_capacity(bytes: usize) -> Self {
        CopyRows {
            buf: String::with_capacity(bytes),
            fresh: true,
        }
    }

    /// Adds the next column of the current row.
    pub fn col(&mut self, value: impl CopyValue) -> &mut Self {
        if !self.fresh {
            self.buf.push('\t');
        }
        self.fresh = false;
        value.write_to(&mut self.buf);
        self
    }

    /// Ends the current row.
    pub fn end_row(&mut self) {
        self.buf.push('\n');
        self.fresh = true;
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf.into_bytes()
    }
}

impl CopyValue for &str {
    /// Backslash, tab, newline and carriage return are escaped; everything
    /// else (UTF-8) is taken as it is.
    fn write_to(&self, out: &mut String) {
        for c in self.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
}

impl CopyValue for i32 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl CopyValue for i16 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl CopyValue for bool {
    fn write_to(&self, out: &mut String) {
        out.push(if *self { 't' } else { 'f' });
    }
}

impl CopyValue for NaiveDate {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{}", self.format("%Y-%m-%d"));
    }
}

impl CopyValue for DateTime<Utc> {
    /// ISO 8601 in UTC, to the microsecond (what `timestamptz` keeps).
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{}", self.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
    }
}

impl CopyValue for Uuid {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{}", self.hyphenated());
    }
}

/// A `bytea` value, written in hex (`\\x…`: the backslash escaped for
/// the text format).
pub struct Bytes<'a>(pub &'a [u8]);

impl CopyValue for Bytes<'_> {
    fn write_to(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push_str("\\\\x");
        for b in self.0 {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

impl<T: CopyValue> CopyValue for Option<T> {
    fn write_to(&self, out: &mut String) {
        match self {
            Some(v) => v.write_to(out),
            None => out.push_str("\\N"),
        }
    }
}
