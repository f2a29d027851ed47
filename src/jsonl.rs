//! Exports read line by line (`aop detect`, `aop diff`), never holding more than
//! [`MAX_LINE_BYTES`] of a line.
//!
//! An exported line is one event, at most [`MAX_EVENT_BYTES`] (64 KiB). A line up to
//! [`MAX_LINE_BYTES`] (1 MiB) is read whole, and the event parser says what is wrong with one over
//! 64 KiB; a longer one cannot be an event at all, so it is read past, keeping only its length, and
//! comes out as [`TooLong`] in its place, so line numbers stay right and memory stays bounded
//! whatever the input (a 300 MiB line once took 900 MB).

use crate::model::MAX_EVENT_BYTES;
use std::io::{self, BufRead};

/// The longest line held: 16 times the largest event.
pub const MAX_LINE_BYTES: usize = 16 * MAX_EVENT_BYTES;

/// A line longer than [`MAX_LINE_BYTES`], skipped unread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a line of {bytes} bytes, longer than any event (at most 64 KiB), skipped unread")]
pub struct TooLong {
    pub bytes: u64,
}

/// One line as it comes: its text (invalid UTF-8 replaced, for the parser to report), or
/// [`TooLong`].
pub type Line = Result<String, TooLong>;

/// The line being read: its bytes while it fits, its length in any case.
#[derive(Default)]
pub struct Splitter {
    held: Vec<u8>,
    len: u64,
}

impl Splitter {
    /// Feeds a chunk of input; `on_line` gets every line the chunk ends.
    pub fn push(&mut self, mut chunk: &[u8], on_line: &mut impl FnMut(Line)) {
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            self.part(&chunk[..nl]);
            on_line(self.end());
            chunk = &chunk[nl + 1..];
        }
        self.part(chunk);
    }

    /// The end of the input: the last line, if it did not end with a newline.
    pub fn finish(&mut self) -> Option<Line> {
        (self.len > 0).then(|| self.end())
    }

    fn part(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.len <= MAX_LINE_BYTES as u64 {
            self.held.extend_from_slice(bytes);
        } else {
            self.held.clear();
        }
    }

    fn end(&mut self) -> Line {
        let len = std::mem::take(&mut self.len);
        let line = if len > MAX_LINE_BYTES as u64 {
            Err(TooLong { bytes: len })
        } else {
            Ok(String::from_utf8_lossy(&self.held).into_owned())
        };
        self.held.clear();
        line
    }
}

/// The lines of `reader`. A read error ends them; [`Lines::error`] then says what it was.
pub struct Lines<R> {
    reader: R,
    splitter: Splitter,
    error: Option<io::Error>,
    done: bool,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Lines<R> {
        Lines { reader, splitter: Splitter::default(), error: None, done: false }
    }

    /// Why the lines ended before the input did, if they did.
    pub fn error(&mut self) -> Option<io::Error> {
        self.error.take()
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        while !self.done {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(e);
                    self.done = true;
                    return None;
                }
            };
            if buf.is_empty() {
                self.done = true;
                return self.splitter.finish();
            }
            let (part, used, ended) = match buf.iter().position(|&b| b == b'\n') {
                Some(nl) => (&buf[..nl], nl + 1, true),
                None => (buf, buf.len(), false),
            };
            self.splitter.part(part);
            self.reader.consume(used);
            if ended {
                return Some(self.splitter.end());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<Line> {
        // A tiny buffer, so lines span many reads.
        Lines::new(io::BufReader::with_capacity(7, input)).collect()
    }

    fn pushed(input: &[u8], chunk: usize) -> Vec<Line> {
        let (mut splitter, mut out) = (Splitter::default(), Vec::new());
        for piece in input.chunks(chunk) {
            splitter.push(piece, &mut |l| out.push(l));
        }
        out.extend(splitter.finish());
        out
    }

    #[test]
    fn lines_are_cut_as_split_cuts_them() {
        let text = |s: &str| Ok(s.to_owned());
        let cases: [(&[u8], Vec<Line>); 6] = [
            (b"", vec![]),
            (b"a", vec![text("a")]),
            (b"a\n", vec![text("a")]),
            (b"a\n\nbb\r\nccc", vec![text("a"), text(""), text("bb\r"), text("ccc")]),
            (b"\n", vec![text("")]),
            (b"x\xffy\n", vec![text("x\u{FFFD}y")]),
        ];
        for (input, want) in cases {
            assert_eq!(lines(input), want, "{input:?}");
            for chunk in [1, 2, 5, 100] {
                assert_eq!(pushed(input, chunk), want, "{input:?} in chunks of {chunk}");
            }
        }
    }

    #[test]
    fn a_line_past_the_bound_is_skipped_in_its_place_and_the_next_is_read() {
        let fits = "x".repeat(MAX_LINE_BYTES);
        let input = format!("first\n{fits}\n{fits}y\nlast\n{fits}zz");
        let want = vec![
            Ok("first".to_owned()),
            Ok(fits.clone()),
            Err(TooLong { bytes: MAX_LINE_BYTES as u64 + 1 }),
            Ok("last".to_owned()),
            Err(TooLong { bytes: MAX_LINE_BYTES as u64 + 2 }),
        ];
        assert_eq!(Lines::new(input.as_bytes()).collect::<Vec<_>>(), want);
        assert_eq!(pushed(input.as_bytes(), 4096), want);
        let mut splitter = Splitter::default();
        splitter.push(format!("{fits}{fits}").as_bytes(), &mut |_| unreachable!());
        assert!(splitter.held.capacity() <= 2 * MAX_LINE_BYTES, "{}", splitter.held.capacity());
    }

    #[test]
    fn a_read_error_ends_the_lines_and_is_kept() {
        struct Failing(bool);
        impl io::Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(io::Error::other("disk on fire"));
                }
                buf[..4].copy_from_slice(b"a\nbc");
                Ok(4)
            }
        }
        let mut lines = Lines::new(io::BufReader::new(Failing(false)));
        assert_eq!(lines.next(), Some(Ok("a".to_owned())));
        assert_eq!(lines.next(), None);
        assert_eq!(lines.error().map(|e| e.to_string()), Some("disk on fire".to_owned()));
    }
}
