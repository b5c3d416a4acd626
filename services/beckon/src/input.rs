//! Where replay and explain read events from: a file, a named pipe or standard input, plain
//! or gzip-compressed, read once from start to end.
//!
//! Nothing here seeks or asks the input for a size it may not have: a pipe has none, so its
//! progress can only be a count of bytes read. Compression is recognised by gzip's first two
//! bytes (`1f 8b`) rather than by a name, so a compressed stream arrives on standard input as
//! readily as in a `.gz` file, and files of several gzip members (logs compressed day by day
//! and joined with `cat`) read as one text. A UTF-8 byte-order mark at the very start of the
//! text, which some editors and exporters write, is skipped there and nowhere else: anywhere
//! later it is part of its line, and that line is judged with it.

use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;

/// The path that stands for standard input.
pub const STDIN: &str = "-";

/// What every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The UTF-8 encoding of U+FEFF, the byte-order mark.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Read buffer, before and after decompression: large reads keep system calls rare.
const BUFFER: usize = 1 << 20;

/// The lines of an event input, numbered from 1 as a text editor numbers them.
pub struct EventLines {
    reader: Box<dyn BufRead + Send>,
    /// The path as given, or `standard input`.
    name: String,
    compressed: bool,
    /// The input's size in bytes, when it is a regular file.
    size: Option<u64>,
    /// Bytes taken from the input so far (compressed bytes, for a compressed input).
    consumed: Arc<AtomicU64>,
    line: u64,
}

impl EventLines {
    /// Opens `path`, or standard input for `-`. A folder is refused here; anything else that
    /// can be read (a file, a named pipe, `/dev/stdin`, a process substitution) is taken.
    pub fn open(path: &Path) -> anyhow::Result<EventLines> {
        let consumed = Arc::new(AtomicU64::new(0));
        if path.as_os_str() == STDIN {
            let source = Counted::new(std::io::stdin(), consumed.clone());
            return EventLines::start(source, "standard input".into(), None, false, consumed);
        }

        let name = path.display().to_string();
        let file = std::fs::File::open(path).with_context(|| format!("opening {name}"))?;
        let meta = file.metadata().with_context(|| format!("reading {name}"))?;
        if meta.is_dir() {
            anyhow::bail!("{name} is a folder, not a file of events");
        }
        let size = meta.is_file().then_some(meta.len());
        let named_gz = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
        let source = Counted::new(file, consumed.clone());
        EventLines::start(source, name, size, named_gz, consumed)
    }

    fn start(
        source: Counted<impl Read + Send + 'static>,
        name: String,
        size: Option<u64>,
        named_gz: bool,
        consumed: Arc<AtomicU64>,
    ) -> anyhow::Result<EventLines> {
        let mut raw = BufReader::with_capacity(BUFFER, source);

        // The first two bytes decide, read in full even from a pipe that hands them over one
        // at a time, and put back in front of the rest.
        let mut head = Vec::with_capacity(GZIP_MAGIC.len());
        (&mut raw)
            .take(GZIP_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .with_context(|| format!("reading {name}"))?;
        let compressed = head == GZIP_MAGIC;
        if named_gz && !compressed {
            anyhow::bail!(
                "{name} is named .gz but is not gzip data (it does not start with the bytes \
                 1f 8b)"
            );
        }
        let raw = Cursor::new(head).chain(raw);

        let reader: Box<dyn BufRead + Send> = if compressed {
            let text = flate2::bufread::MultiGzDecoder::new(raw);
            Box::new(BufReader::with_capacity(BUFFER, text))
        } else {
            Box::new(raw)
        };
        Ok(EventLines {
            reader,
            name,
            compressed,
            size,
            consumed,
            line: 0,
        })
    }

    /// The input's size in bytes, as the progress bar's end; `None` for a pipe or standard
    /// input. For a compressed file it is the compressed size, as is [`EventLines::consumed`].
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Bytes taken from the input so far. Reads are buffered, so this runs ahead of the
    /// lines handed out by up to a buffer's worth.
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }

    /// Reads the next line into `line`, without its `\n` or `\r\n`, and returns its number;
    /// `None` at the end of the input. A failure to read names the input, and for a
    /// compressed one says whether the stream ended early or is damaged, and after which
    /// line.
    pub fn next_line(&mut self, line: &mut Vec<u8>) -> anyhow::Result<Option<u64>> {
        line.clear();
        let n = match self.reader.read_until(b'\n', line) {
            Ok(n) => n,
            Err(e) => return Err(self.failure(e)),
        };
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;

        if line.ends_with(b"\n") {
            line.pop();
            if line.ends_with(b"\r") {
                line.pop();
            }
        }
        if self.line == 1 && line.starts_with(BOM) {
            line.drain(..BOM.len());
        }
        Ok(Some(self.line))
    }

    /// Calls `each` with every line that is UTF-8 text. A line that is not is no event of
    /// anyone's; the next one may be.
    pub fn for_each_text(mut self, mut each: impl FnMut(&str)) -> anyhow::Result<()> {
        let mut line = Vec::with_capacity(4096);
        while self.next_line(&mut line)?.is_some() {
            if let Ok(text) = std::str::from_utf8(&line) {
                each(text);
            }
        }
        Ok(())
    }

    fn failure(&self, e: std::io::Error) -> anyhow::Error {
        let (name, after) = (&self.name, self.line);
        if !self.compressed {
            return anyhow::Error::new(e).context(format!("reading {name}"));
        }
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => anyhow::anyhow!(
                "{name}: the gzip stream ended early, after line {after}: the file is cut short \
                 (copied in part, or still being written)"
            ),
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                anyhow::anyhow!("{name}: the gzip data is damaged after line {after} ({e})")
            }
            _ => anyhow::Error::new(e).context(format!("reading {name}")),
        }
    }
}

/// A reader that counts the bytes it hands out.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> Counted<R> {
    fn new(inner: R, count: Arc<AtomicU64>) -> Counted<R> {
        Counted { inner, count }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn lines_of(bytes: &[u8]) -> Vec<(u64, String)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, bytes).expect("write");
        let mut input = EventLines::open(&path).expect("opens");
        let mut line = Vec::new();
        let mut out = Vec::new();
        while let Some(n) = input.next_line(&mut line).expect("reads") {
            out.push((n, String::from_utf8_lossy(&line).into_owned()));
        }
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("compress");
        encoder.finish().expect("compress")
    }

    #[test]
    fn a_mark_at_the_start_is_skipped_and_one_later_is_kept() {
        let got = lines_of(b"\xef\xbb\xbfa\r\n\xef\xbb\xbfb\nc");
        assert_eq!(
            got,
            [(1, "a".into()), (2, "\u{feff}b".into()), (3, "c".into())]
        );
    }

    #[test]
    fn gzip_members_read_as_one_text_whatever_the_name() {
        let mut bytes = gzip(b"\xef\xbb\xbfa\nb\n");
        bytes.extend(gzip(b"c\n"));
        assert_eq!(
            lines_of(&bytes),
            [(1, "a".into()), (2, "b".into()), (3, "c".into())]
        );
    }

    #[test]
    fn a_single_byte_and_an_empty_input_are_text() {
        assert_eq!(lines_of(b"\x1f"), [(1, "\u{1f}".into())]);
        assert!(lines_of(b"").is_empty());
    }
}
