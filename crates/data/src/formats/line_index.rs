//! Line numbers of CSV records.
//!
//! The `csv` crate (1.4) reports a record's position as the end of the
//! previous record, so after CRLF endings or blank lines its line number
//! is that of the previous line break. [`LineCounting`] watches the bytes
//! the parser reads and finds the line each record's text starts on.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

/// Line breaks and line starts seen so far but not yet asked about.
#[derive(Debug, Default)]
struct Seen {
    /// Bytes read so far.
    offset: u64,
    /// Whether the last byte read was `\n` or `\r` (true at the start).
    after_break: bool,
    /// Offsets of `\n` bytes not yet counted into `lines_before`.
    newlines: VecDeque<u64>,
    /// Offsets of bytes that follow a line break or start the input and
    /// are not line breaks themselves.
    content_starts: VecDeque<u64>,
    /// `\n` bytes dropped from `newlines`.
    lines_before: u64,
}

/// Shared view of the line breaks a [`LineCounting`] reader has seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct LineIndex(Rc<RefCell<Seen>>);

impl LineIndex {
    /// Returns the line, counted from 1, of the first text at or after byte
    /// `offset`. Offsets must be asked for in increasing order.
    pub(crate) fn line_at(&self, offset: u64) -> u64 {
        let mut seen = self.0.borrow_mut();
        while seen
            .content_starts
            .front()
            .is_some_and(|&start| start < offset)
        {
            seen.content_starts.pop_front();
        }
        let start = seen.content_starts.front().copied().unwrap_or(seen.offset);
        while seen
            .newlines
            .front()
            .is_some_and(|&newline| newline < start)
        {
            seen.newlines.pop_front();
            seen.lines_before += 1;
        }
        seen.lines_before + 1
    }
}

/// Reader that records line breaks into a [`LineIndex`] as bytes pass.
#[derive(Debug)]
pub(crate) struct LineCounting<R> {
    inner: R,
    index: LineIndex,
}

impl<R> LineCounting<R> {
    pub(crate) fn new(inner: R) -> (Self, LineIndex) {
        let index = LineIndex::default();
        index.0.borrow_mut().after_break = true;
        let reader = LineCounting {
            inner,
            index: index.clone(),
        };
        (reader, index)
    }
}

impl<R: io::Read> io::Read for LineCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        let mut seen = self.index.0.borrow_mut();
        for &byte in &buf[..count] {
            let offset = seen.offset;
            let is_break = byte == b'\n' || byte == b'\r';
            if byte == b'\n' {
                seen.newlines.push_back(offset);
            } else if !is_break && seen.after_break {
                seen.content_starts.push_back(offset);
            }
            seen.after_break = is_break;
            seen.offset += 1;
        }
        Ok(count)
    }
}
