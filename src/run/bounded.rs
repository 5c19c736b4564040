//! Readers with limits, for every file or stream handoff reads whole or line
//! by line (trace files, batch rows, standard input): `handoff diff
//! /dev/zero x` must say which limit it hit, not read until memory runs out.

use std::io::Read;

/// A reader that fails once more than `max_line` bytes pass without a
/// newline, or more than `max_total` bytes in all. Its errors say which.
pub struct Bounded<R> {
    inner: R,
    max_line: u64,
    max_total: u64,
    line: u64,
    total: u64,
}

impl<R: Read> Bounded<R> {
    pub fn new(inner: R, max_line: u64, max_total: u64) -> Bounded<R> {
        Bounded {
            inner,
            max_line,
            max_total,
            line: 0,
            total: 0,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.max_total {
            return Err(too_large(format!(
                "it is larger than {}",
                size(self.max_total)
            )));
        }
        for b in &buf[..n] {
            if *b == b'\n' {
                self.line = 0;
            } else {
                self.line += 1;
                if self.line > self.max_line {
                    return Err(too_large(format!(
                        "a line is longer than {}",
                        size(self.max_line)
                    )));
                }
            }
        }
        Ok(n)
    }
}

fn too_large(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

/// A size as people say it: `1 MB`, `256 MB`, `4 GB`.
pub fn size(bytes: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if bytes >= 1024 * MB && bytes.is_multiple_of(1024 * MB) {
        format!("{} GB", bytes / (1024 * MB))
    } else if bytes >= MB {
        format!("{} MB", bytes / MB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_line_or_stream_stops_at_its_limit() {
        let mut text = String::new();
        let e = Bounded::new(std::io::repeat(0), 1024, u64::MAX)
            .read_to_string(&mut text)
            .unwrap_err();
        assert_eq!(e.to_string(), "a line is longer than 1024 bytes");
        let lines = std::io::repeat(b'\n');
        let e = Bounded::new(lines, 10, 4 * 1024 * 1024)
            .read_to_string(&mut text)
            .unwrap_err();
        assert_eq!(e.to_string(), "it is larger than 4 MB");
        let mut ok = String::new();
        Bounded::new(&b"a\nbc\n"[..], 2, 5)
            .read_to_string(&mut ok)
            .unwrap();
        assert_eq!(ok, "a\nbc\n");
    }
}
