//! Message body framing: how long a body is, and an incremental decoder for
//! `Transfer-Encoding: chunked` that tells where a chunked body ends.
//!
//! The proxy forwards chunked bodies with their chunk boundaries (no
//! re-encoding), so the decoder's main job is framing: it finds the end of
//! the message so that the connection can be reused, and counts the payload
//! bytes for size limits. A chunked request body goes upstream without its
//! chunk extensions and trailer fields (`BodyTracker::relay`): what the
//! upstream reads is exactly what the proxy parsed, ending in `0\r\n\r\n`.

/// How the length of a message body is determined (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the peer closes the connection (responses only).
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("chunk size line too long")]
    LineTooLong,
    #[error("missing CRLF after chunk data")]
    MissingCrlf,
    #[error("control character in a chunk extension or trailer field")]
    ControlCharacter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_LINE: u32 = 4096;

/// Incremental, allocation-free decoder for the chunked transfer coding.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    chunk_left: u64,
    size_digits: u8,
    line_len: u32,
    payload: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: State::Size,
            chunk_left: 0,
            size_digits: 0,
            line_len: 0,
            payload: 0,
        }
    }

    /// Payload bytes seen so far (chunk data only, not framing).
    pub fn payload_len(&self) -> u64 {
        self.payload
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds `input`, calling `on_data` for every run of payload bytes.
    ///
    /// Returns `Some(n)` when the message ended after the first `n` bytes of
    /// `input` (what follows belongs to the next message), `None` when all of
    /// `input` was consumed and more is needed.
    pub fn feed(
        &mut self,
        input: &[u8],
        on_data: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, ChunkError> {
        self.feed_wire(input, on_data, &mut ())
    }

    /// `feed` that also appends to `wire` the bytes to send on: all of
    /// them but chunk extensions and trailer field lines, so that the body
    /// ends in `0\r\n\r\n` whatever came after the last chunk's size.
    pub fn feed_wire(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
        wire: &mut impl Wire,
    ) -> Result<Option<usize>, ChunkError> {
        // Start of the run of bytes kept for the wire.
        let mut kept = 0;
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            let dropped = match self.state {
                State::Size => matches!(byte, b';' | b' ' | b'\t'),
                State::Extension | State::TrailerStart => byte != b'\r',
                State::TrailerLine | State::TrailerLf => true,
                _ => false,
            };
            if dropped {
                wire.keep(&input[kept..i]);
                kept = i + 1;
            }
            match self.state {
                State::Size => match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.size_digits >= 15 {
                            return Err(ChunkError::BadSize);
                        }
                        let digit = (byte as char).to_digit(16).unwrap_or(0) as u64;
                        self.chunk_left = self.chunk_left * 16 + digit;
                        self.size_digits += 1;
                        self.line_len += 1;
                    }
                    b';' | b' ' | b'\t' if self.size_digits > 0 => {
                        self.state = State::Extension;
                        self.line_len += 1;
                    }
                    b'\r' if self.size_digits > 0 => self.state = State::SizeLf,
                    _ => return Err(ChunkError::BadSize),
                },
                State::Extension => {
                    self.line_len += 1;
                    if self.line_len > MAX_LINE {
                        return Err(ChunkError::LineTooLong);
                    }
                    if byte == b'\r' {
                        self.state = State::SizeLf;
                    } else if is_control(byte) {
                        return Err(ChunkError::ControlCharacter);
                    }
                }
                State::SizeLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::BadSize);
                    }
                    self.line_len = 0;
                    self.size_digits = 0;
                    self.state = if self.chunk_left == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let available = (input.len() - i) as u64;
                    let take = available.min(self.chunk_left) as usize;
                    on_data(&input[i..i + take]);
                    self.payload += take as u64;
                    self.chunk_left -= take as u64;
                    if self.chunk_left == 0 {
                        self.state = State::DataCr;
                    }
                    i += take;
                    continue;
                }
                State::DataCr => {
                    if byte != b'\r' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.state = if byte == b'\r' {
                        State::FinalLf
                    } else if is_control(byte) {
                        return Err(ChunkError::ControlCharacter);
                    } else {
                        self.line_len = 1;
                        State::TrailerLine
                    };
                }
                State::TrailerLine => {
                    self.line_len += 1;
                    if self.line_len > MAX_LINE {
                        return Err(ChunkError::LineTooLong);
                    }
                    if byte == b'\r' {
                        self.state = State::TrailerLf;
                    } else if is_control(byte) {
                        return Err(ChunkError::ControlCharacter);
                    }
                }
                State::TrailerLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::TrailerStart;
                }
                State::FinalLf => {
                    if byte != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::Done;
                    wire.keep(&input[kept..=i]);
                    return Ok(Some(i + 1));
                }
                State::Done => {
                    wire.keep(&input[kept..i]);
                    return Ok(Some(i));
                }
            }
            i += 1;
        }
        wire.keep(&input[kept..]);
        Ok(if self.state == State::Done {
            Some(i)
        } else {
            None
        })
    }
}

/// A byte no chunk extension or trailer field may hold: a control
/// character other than horizontal tab (a bare LF there is read as a line
/// end by some servers).
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// Where `ChunkedDecoder::feed_wire` puts the bytes it keeps.
pub trait Wire {
    fn keep(&mut self, bytes: &[u8]);
}

/// Keeps nothing: the decoder only finds the end of the body.
impl Wire for () {
    #[inline(always)]
    fn keep(&mut self, _: &[u8]) {}
}

impl Wire for Vec<u8> {
    #[inline]
    fn keep(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Tracks how much of a body is left to relay, whatever its framing.
#[derive(Debug)]
pub enum BodyTracker {
    Remaining(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyTracker {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Self::Remaining(0),
            Framing::Length(n) => Self::Remaining(n),
            Framing::Chunked => Self::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            Self::Remaining(n) => *n == 0,
            Self::Chunked(decoder) => decoder.is_done(),
            Self::UntilClose => false,
        }
    }

    /// Accounts for `input`; returns how many of its bytes belong to this body.
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        match self {
            Self::Remaining(n) => {
                let take = (*n).min(input.len() as u64);
                *n -= take;
                Ok(take as usize)
            }
            Self::Chunked(decoder) => Ok(decoder.feed(input, |_| {})?.unwrap_or(input.len())),
            Self::UntilClose => Ok(input.len()),
        }
    }

    /// `advance` that also hands the payload bytes (de-chunked) to `tap`.
    pub fn advance_tapped(
        &mut self,
        input: &[u8],
        mut tap: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        match self {
            Self::Chunked(decoder) => Ok(decoder.feed(input, tap)?.unwrap_or(input.len())),
            _ => {
                let taken = self.advance(input)?;
                tap(&input[..taken]);
                Ok(taken)
            }
        }
    }

    /// `advance` that also appends to `out` the bytes to send on, and hands
    /// the payload bytes (de-chunked) to `tap`: a length-delimited body as
    /// it came, a chunked one without chunk extensions and trailer fields.
    pub fn relay(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        mut tap: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        match self {
            Self::Chunked(decoder) => {
                Ok(decoder.feed_wire(input, tap, out)?.unwrap_or(input.len()))
            }
            _ => {
                let taken = self.advance(input)?;
                tap(&input[..taken]);
                out.extend_from_slice(&input[..taken]);
                Ok(taken)
            }
        }
    }

    /// Upper bound for the next read so that a read never crosses the end of
    /// a length-delimited body (the bytes after it belong to the next message).
    pub fn read_limit(&self, capacity: usize) -> usize {
        match self {
            Self::Remaining(n) => (*n).min(capacity as u64) as usize,
            _ => capacity,
        }
    }

    /// Payload bytes seen so far, for size limits on chunked bodies.
    pub fn chunked_payload(&self) -> u64 {
        match self {
            Self::Chunked(decoder) => decoder.payload_len(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the parts in order; returns the payload and the absolute
    /// offset (over all parts) where the message ended.
    fn decode_all(parts: &[&[u8]]) -> Result<(Vec<u8>, Option<usize>), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut offset = 0;
        for part in parts {
            if let Some(end) = decoder.feed(part, |data| out.extend_from_slice(data))? {
                return Ok((out, Some(offset + end)));
            }
            offset += part.len();
        }
        Ok((out, None))
    }

    #[test]
    fn decodes_chunks_split_anywhere() {
        let message = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for split in 1..message.len() {
            let (a, b) = message.split_at(split);
            let (data, end) = decode_all(&[a, b]).unwrap();
            assert_eq!(data, b"hello, world");
            assert_eq!(end, Some(message.len() - 4), "split {split}");
        }
    }

    #[test]
    fn reports_end_and_leaves_following_bytes() {
        let mut decoder = ChunkedDecoder::new();
        let end = decoder.feed(b"0\r\n\r\nGET / HTTP/1.1", |_| {}).unwrap();
        assert_eq!(end, Some(5));
        assert!(decoder.is_done());
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(decode_all(&[b"zz\r\n"]), Err(ChunkError::BadSize));
        assert_eq!(decode_all(&[b"\r\n"]), Err(ChunkError::BadSize));
        assert_eq!(decode_all(&[b"3\r\nabcX"]), Err(ChunkError::MissingCrlf));
        assert_eq!(decode_all(&[b"3\nabc"]), Err(ChunkError::BadSize));
        assert_eq!(
            decode_all(&[b"ffffffffffffffff\r\n"]),
            Err(ChunkError::BadSize)
        );
    }

    /// Relays `parts` in order through one tracker; returns what goes on
    /// the wire and the payload.
    fn relay_all(parts: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut tracker = BodyTracker::new(Framing::Chunked);
        let (mut wire, mut payload) = (Vec::new(), Vec::new());
        for part in parts {
            let taken = tracker.relay(part, &mut wire, |data| payload.extend_from_slice(data))?;
            if tracker.is_done() {
                assert_eq!(&part[taken..], b"NEXT");
            }
        }
        assert!(tracker.is_done());
        Ok((wire, payload))
    }

    #[test]
    fn relayed_chunked_body_loses_extensions_and_trailers() {
        let message: &[u8] = b"5 ;a=1\r\nhello\r\n7;b=\"x y\"\r\n, world\r\n0;last\r\n\
Authorization: Bearer sk-x\r\nContent-Length: 99\r\n\r\nNEXT";
        let expected: &[u8] = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        // Whole, and split at every byte (a read can end anywhere).
        assert_eq!(
            relay_all(&[message]).unwrap(),
            (expected.to_vec(), b"hello, world".to_vec())
        );
        for split in 1..message.len() - 4 {
            let (a, b) = message.split_at(split);
            let (wire, payload) = relay_all(&[a, b]).unwrap();
            assert_eq!(wire, expected, "split {split}");
            assert_eq!(payload, b"hello, world");
        }
        // Without trailers or extensions: byte for byte.
        let plain: &[u8] = b"3\r\nabc\r\n0\r\n\r\nNEXT";
        assert_eq!(relay_all(&[plain]).unwrap().0, &plain[..plain.len() - 4]);
        // A length-delimited body: as it came, up to its end.
        let mut tracker = BodyTracker::new(Framing::Length(3));
        let mut wire = Vec::new();
        assert_eq!(tracker.relay(b"abcNEXT", &mut wire, |_| {}).unwrap(), 3);
        assert_eq!(wire, b"abc");
    }

    #[test]
    fn control_characters_in_extensions_and_trailers_are_refused() {
        // A bare LF ends a line for some servers: never let one through.
        for bad in [
            &b"3;a\nb\r\nabc\r\n0\r\n\r\n"[..],
            b"3;a\x00\r\nabc\r\n0\r\n\r\n",
            b"0\r\nX: a\nContent-Length: 5\r\n\r\n",
            b"0\r\n\nX: 1\r\n\r\n",
        ] {
            assert_eq!(
                decode_all(&[bad]),
                Err(ChunkError::ControlCharacter),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(decode_all(&[b"3;a=\"\tb\"\r\nabc\r\n0\r\nX: \t1\r\n\r\n"]).is_ok());
    }

    #[test]
    fn tracker_stops_at_content_length() {
        let mut tracker = BodyTracker::new(Framing::Length(4));
        assert_eq!(tracker.read_limit(100), 4);
        assert_eq!(tracker.advance(b"ab").unwrap(), 2);
        assert_eq!(tracker.advance(b"cdef").unwrap(), 2);
        assert!(tracker.is_done());
    }
}
