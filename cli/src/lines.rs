//! Following a log as lines: the one place that splits bytes read from an offset into
//! whole lines, for `kiln run`'s live view and `kiln logs --follow` alike.

use std::io::Write;

/// One followed stream: where to read next, and its unfinished last line.
#[derive(Default)]
pub struct StreamTail {
    pub offset: u64,
    partial: Vec<u8>,
    /// Read to its end and flushed: nothing more will come.
    pub done: bool,
}

impl StreamTail {
    /// Takes the bytes read at `offset` (the next read starts at `next`) and hands each
    /// whole line, without its newline, to `emit`.
    pub fn feed(&mut self, bytes: &[u8], next: u64, emit: &mut impl FnMut(&[u8])) {
        self.offset = next;
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|&c| c == b'\n') {
            emit(&self.partial[start..start + i]);
            start += i + 1;
        }
        self.partial.drain(..start);
    }

    /// Nothing more will come: an unfinished last line is a line too.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
        self.done = true;
    }
}

/// Writes `label | line` (the line's bytes as they are).
pub fn write_labelled(out: &mut dyn Write, label: &str, line: &[u8]) {
    let _ = write!(out, "{label} | ");
    let _ = out.write_all(line);
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_reads_and_a_last_line_without_newline() {
        let mut t = StreamTail::default();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        t.feed(b"a\nb", 3, &mut |l| lines.push(l.to_vec()));
        t.feed(b"c\n\xff\nend", 10, &mut |l| lines.push(l.to_vec()));
        assert_eq!(t.offset, 10);
        t.finish(&mut |l| lines.push(l.to_vec()));
        assert_eq!(lines, [b"a".to_vec(), b"bc".to_vec(), b"\xff".to_vec(), b"end".to_vec()]);
        assert!(t.done);
    }
}
