//! A file written by a thread of its own.
//!
//! Writing a trace file costs the kernel about as much as the engine spends
//! producing the events: a dry run's loop writes hundreds of megabytes. The
//! run fills a buffer and hands each full one to a writer thread, so the
//! copying into the page cache happens on the other core while the run goes
//! on. At most [`IN_FLIGHT`] buffers wait for the writer, so memory stays
//! flat however long the run is: a run that outpaces the disk waits for it.
//!
//! A file whose name ends in `.gz` is written gzip-compressed, by the same
//! thread. A poll loop's trace repeats itself and compresses about 14 to 1,
//! at a fast level that keeps pace with the run. Each buffer handed over is
//! flushed into the file (a sync flush), so the file read while the run goes
//! on, or after it was killed, holds every whole buffer handed over so far.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// How much is gathered before it is handed over.
const CHUNK: usize = 256 * 1024;
/// Buffers handed over and not yet written, at most.
const IN_FLIGHT: usize = 4;

pub struct Offload {
    buf: Vec<u8>,
    to_writer: Option<SyncSender<Vec<u8>>>,
    /// Written buffers, returned to be filled again.
    spare: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<std::io::Result<()>>>,
    /// The first failure, once the writer has stopped.
    failed: Option<std::io::Error>,
}

/// How a file's bytes are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Plain,
    Gzip,
}

impl Encoding {
    /// Gzip for a name that ends in `.gz`, as `gzip` and `zcat` expect.
    pub fn of(path: &std::path::Path) -> Encoding {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("gz") => Encoding::Gzip,
            _ => Encoding::Plain,
        }
    }
}

impl Offload {
    pub fn new(file: File, encoding: Encoding) -> Offload {
        let (to_writer, from_run) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (give_back, spare) = sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
        let writer = std::thread::Builder::new()
            .name("trace-file".into())
            .spawn(move || match encoding {
                Encoding::Plain => write_each(file, from_run, give_back).map(drop),
                Encoding::Gzip => {
                    // Level 1: the poll loop's trace 14 to 1, keeping pace with the
                    // run; level 6 made it a third smaller in three times as long.
                    let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
                    write_each(gzip, from_run, give_back)?.finish().map(drop)
                }
            });
        let (writer, failed) = match writer {
            Ok(handle) => (Some(handle), None),
            Err(e) => (None, Some(e)),
        };
        Offload {
            buf: Vec::with_capacity(CHUNK),
            to_writer: writer.is_some().then_some(to_writer),
            spare,
            writer,
            failed,
        }
    }

    pub fn write_all(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.written();
    }

    /// The buffer being filled, to write into in place; call
    /// [`Offload::written`] after.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Hands the buffer over once it is full.
    pub fn written(&mut self) {
        if self.buf.len() >= CHUNK {
            self.hand_over();
        }
    }

    /// Hands what is gathered to the writer; it is written shortly after.
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.to_writer.as_ref().map(|tx| tx.send(full));
        if let Some(Err(_)) = sent {
            // The writer stopped on an error: `finish` reports it.
            self.to_writer = None;
        }
        if self.to_writer.is_none() {
            self.buf.clear();
        }
    }

    /// Writes out everything and waits until it is written; the first
    /// failure, if any.
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.flush();
        self.to_writer = None;
        if let Some(writer) = self.writer.take() {
            let result = writer
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the trace writer stopped")));
            if let Err(e) = result {
                self.failed = Some(e);
            }
        }
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Writes each buffer as it comes and flushes it (for gzip, a sync flush:
/// what was handed over can be read back before the file is finished).
fn write_each<W: Write>(
    mut out: W,
    from_run: Receiver<Vec<u8>>,
    give_back: SyncSender<Vec<u8>>,
) -> std::io::Result<W> {
    for mut chunk in from_run {
        out.write_all(&chunk)?;
        out.flush()?;
        chunk.clear();
        let _ = give_back.try_send(chunk);
    }
    Ok(out)
}

impl Drop for Offload {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything written arrives, in order, across many hand-overs and
    /// flushes, and `finish` waits for it; compressed, it reads back the same.
    #[test]
    fn writes_everything_in_order() {
        use std::io::Read;
        let dir = std::env::temp_dir().join(format!("handoff-offload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for encoding in [Encoding::Plain, Encoding::Gzip] {
            let path = dir.join(format!("t-{encoding:?}.jsonl"));
            let mut sink = Offload::new(File::create(&path).unwrap(), encoding);
            let mut expected = Vec::new();
            for i in 0..100_000u32 {
                let line = format!("{{\"seq\":{i}}}\n");
                sink.write_all(line.as_bytes());
                expected.extend_from_slice(line.as_bytes());
                if i % 7919 == 0 {
                    sink.flush();
                }
            }
            sink.finish().unwrap();
            let mut written = std::fs::read(&path).unwrap();
            if encoding == Encoding::Gzip {
                assert_eq!(written[..2], [0x1f, 0x8b], "gzip's magic bytes");
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&written[..])
                    .read_to_end(&mut plain)
                    .unwrap();
                written = plain;
            }
            assert!(written == expected, "{encoding:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file that cannot take the bytes is reported at the end, and the
    /// run is not stopped by it.
    #[test]
    fn a_failed_write_is_reported_at_the_end() {
        let Ok(full) = File::options().write(true).open("/dev/full") else {
            return;
        };
        let mut sink = Offload::new(full, Encoding::Plain);
        for _ in 0..10 {
            sink.write_all(&[b'x'; CHUNK]);
        }
        let err = sink.finish().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "{err}");
    }
}
