//! Message body framing: how long a body is, and an incremental decoder for
//! `Transfer-Encoding: chunked` that tells where a chunked body ends.
//!
//! The proxy forwards chunked bodies byte for byte (no re-encoding), so the
//! decoder's main job is framing: it finds the end of the message so that the
//! connection can be reused, and counts the payload bytes for size limits.

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
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<Option<usize>, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
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
                    return Ok(Some(i + 1));
                }
                State::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok(if self.state == State::Done {
            Some(i)
        } else {
            None
        })
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

    #[test]
    fn tracker_stops_at_content_length() {
        let mut tracker = BodyTracker::new(Framing::Length(4));
        assert_eq!(tracker.read_limit(100), 4);
        assert_eq!(tracker.advance(b"ab").unwrap(), 2);
        assert_eq!(tracker.advance(b"cdef").unwrap(), 2);
        assert!(tracker.is_done());
    }
}
