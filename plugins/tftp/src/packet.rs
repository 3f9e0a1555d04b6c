//! TFTP packet codec: RFC 1350 §5 (packet formats), RFC 2347 (options and
//! OACK). Pure functions over byte slices; no I/O.
//!
//! Every packet starts with a 2-byte big-endian opcode:
//!
//! ```text
//! RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ...
//! DATA     | 03    | block #  | data (0..=blksize bytes)
//! ACK      | 04    | block #
//! ERROR    | 05    | code     | message | 0
//! OACK     | 06    | opt1 | 0 | value1 | 0 | ...            (RFC 2347)
//! ```

use std::borrow::Cow;
use std::fmt;

/// Length of the DATA and ACK headers (opcode + block number).
pub const HEADER_LEN: usize = 4;
/// Block size without negotiation (RFC 1350 §2).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest block size a client may request (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest block size a client may request (RFC 2348: 65464 fits a UDP
/// datagram over IPv4 with headers).
pub const MAX_BLKSIZE: u16 = 65464;
/// Largest datagram any TFTP peer can legally send us (DATA of MAX_BLKSIZE).
pub const MAX_PACKET: usize = HEADER_LEN + MAX_BLKSIZE as usize;

/// Opcodes (RFC 1350 §5, RFC 2347 for OACK).
pub mod opcode {
    pub const RRQ: u16 = 1;
    pub const WRQ: u16 = 2;
    pub const DATA: u16 = 3;
    pub const ACK: u16 = 4;
    pub const ERROR: u16 = 5;
    pub const OACK: u16 = 6;
}

/// Error codes (RFC 1350 appendix "Error Codes", RFC 2347 for code 8).
pub mod error_code {
    pub const NOT_DEFINED: u16 = 0;
    pub const FILE_NOT_FOUND: u16 = 1;
    pub const ACCESS_VIOLATION: u16 = 2;
    pub const DISK_FULL: u16 = 3;
    pub const ILLEGAL_OPERATION: u16 = 4;
    pub const UNKNOWN_TID: u16 = 5;
    pub const FILE_EXISTS: u16 = 6;
    pub const NO_SUCH_USER: u16 = 7;
    pub const OPTION_REFUSED: u16 = 8;

    /// The RFC's wording for a code, for messages.
    pub fn describe(code: u16) -> &'static str {
        match code {
            NOT_DEFINED => "not defined",
            FILE_NOT_FOUND => "file not found",
            ACCESS_VIOLATION => "access violation",
            DISK_FULL => "disk full or allocation exceeded",
            ILLEGAL_OPERATION => "illegal TFTP operation",
            UNKNOWN_TID => "unknown transfer ID",
            FILE_EXISTS => "file already exists",
            NO_SUCH_USER => "no such user",
            OPTION_REFUSED => "option negotiation refused",
            _ => "unknown error code",
        }
    }
}

/// An RRQ or WRQ (RFC 1350 §5, options per RFC 2347).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub filename: &'a str,
    pub mode: &'a str,
    pub options: Vec<(&'a str, &'a str)>,
}

/// A decoded packet, borrowing from the datagram it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request<'a>),
    Wrq(Request<'a>),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    /// The message is decoded leniently (servers send Latin-1 or garbage).
    Error {
        code: u16,
        message: Cow<'a, str>,
    },
    /// Option names and values as sent; names compare case-insensitively
    /// (RFC 2347: "Options ... are case-insensitive").
    Oack {
        options: Vec<(&'a str, &'a str)>,
    },
}

/// Why a datagram is not a well-formed TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub &'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed TFTP packet: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

/// Decodes one datagram.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, ParseError> {
    if buf.len() < 2 {
        return Err(ParseError("shorter than an opcode"));
    }
    let op = u16::from_be_bytes([buf[0], buf[1]]);
    let body = &buf[2..];
    match op {
        opcode::RRQ => parse_request(body).map(Packet::Rrq),
        opcode::WRQ => parse_request(body).map(Packet::Wrq),
        opcode::DATA => {
            let block = block_number(body)?;
            Ok(Packet::Data {
                block,
                data: &body[2..],
            })
        }
        opcode::ACK => {
            // Some stacks pad ACKs; anything after the block number is ignored.
            let block = block_number(body)?;
            Ok(Packet::Ack { block })
        }
        opcode::ERROR => {
            let code = block_number(body)?;
            let rest = &body[2..];
            // The message should be NUL-terminated; accept a missing NUL.
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            Ok(Packet::Error {
                code,
                message: String::from_utf8_lossy(&rest[..end]),
            })
        }
        opcode::OACK => Ok(Packet::Oack {
            options: parse_options(body)?,
        }),
        _ => Err(ParseError("unknown opcode")),
    }
}

fn block_number(body: &[u8]) -> Result<u16, ParseError> {
    match body {
        [hi, lo, ..] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(ParseError("truncated header")),
    }
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, ParseError> {
    let mut fields = Fields(body);
    let filename = fields.next_str()?.ok_or(ParseError("no filename"))?;
    let mode = fields.next_str()?.ok_or(ParseError("no mode"))?;
    Ok(Request {
        filename,
        mode,
        options: parse_options(fields.0)?,
    })
}

/// Option/value pairs (RFC 2347 "Packet Formats"): NUL-terminated strings.
fn parse_options(body: &[u8]) -> Result<Vec<(&str, &str)>, ParseError> {
    let mut fields = Fields(body);
    let mut options = Vec::new();
    while let Some(name) = fields.next_str()? {
        let value = fields
            .next_str()?
            .ok_or(ParseError("option without a value"))?;
        options.push((name, value));
    }
    Ok(options)
}

/// Iterator over NUL-terminated strings.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next_str(&mut self) -> Result<Option<&'a str>, ParseError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError("string not NUL-terminated"))?;
        let s = std::str::from_utf8(&self.0[..end]).map_err(|_| ParseError("string not ASCII"))?;
        self.0 = &self.0[end + 1..];
        Ok(Some(s))
    }
}

/// Encodes an RRQ (`opcode::RRQ`) or WRQ (`opcode::WRQ`) into `out`.
/// `filename`, `mode` and the options must not contain NUL bytes (checked
/// by the caller: a NUL would split the field).
pub fn encode_request(
    out: &mut Vec<u8>,
    op: u16,
    filename: &str,
    mode: &str,
    options: &[(&str, String)],
) {
    out.clear();
    out.extend_from_slice(&op.to_be_bytes());
    push_str(out, filename);
    push_str(out, mode);
    for (name, value) in options {
        push_str(out, name);
        push_str(out, value);
    }
}

/// Encodes an OACK (used by test servers; the client only decodes them).
pub fn encode_oack(out: &mut Vec<u8>, options: &[(&str, &str)]) {
    out.clear();
    out.extend_from_slice(&opcode::OACK.to_be_bytes());
    for (name, value) in options {
        push_str(out, name);
        push_str(out, value);
    }
}

/// Encodes an ERROR packet (RFC 1350 §5: code, message, NUL).
pub fn encode_error(out: &mut Vec<u8>, code: u16, message: &str) {
    out.clear();
    out.extend_from_slice(&opcode::ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    // A NUL inside the message would end it early; drop any.
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// An ACK packet.
pub fn ack(block: u16) -> [u8; HEADER_LEN] {
    let [a, b] = opcode::ACK.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

/// The 4-byte DATA header; the payload follows it in the same datagram.
pub fn data_header(block: u16) -> [u8; HEADER_LEN] {
    let [a, b] = opcode::DATA.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

/// Encodes a whole DATA packet (convenience for tests and small payloads;
/// the client writes headers in place in its window buffer instead).
pub fn encode_data(out: &mut Vec<u8>, block: u16, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&data_header(block));
    out.extend_from_slice(data);
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_with_options() {
        let mut buf = Vec::new();
        let opts = [("blksize", "1468".to_string()), ("tsize", "0".to_string())];
        encode_request(&mut buf, opcode::RRQ, "db.dump", "octet", &opts);
        assert_eq!(
            buf,
            b"\x00\x01db.dump\x00octet\x00blksize\x001468\x00tsize\x000\x00"
        );
        let p = parse(&buf).unwrap();
        assert_eq!(
            p,
            Packet::Rrq(Request {
                filename: "db.dump",
                mode: "octet",
                options: vec![("blksize", "1468"), ("tsize", "0")],
            })
        );
    }

    #[test]
    fn wrq_without_options() {
        let mut buf = Vec::new();
        encode_request(&mut buf, opcode::WRQ, "a", "octet", &[]);
        assert_eq!(buf, b"\x00\x02a\x00octet\x00");
        match parse(&buf).unwrap() {
            Packet::Wrq(r) => {
                assert_eq!(r.filename, "a");
                assert!(r.options.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_and_ack() {
        let mut buf = Vec::new();
        encode_data(&mut buf, 65535, b"xyz");
        assert_eq!(buf, b"\x00\x03\xff\xffxyz");
        assert_eq!(
            parse(&buf).unwrap(),
            Packet::Data {
                block: 65535,
                data: b"xyz"
            }
        );
        // An empty DATA block is valid: it ends a transfer whose size is a
        // multiple of the block size (RFC 1350 §6).
        assert_eq!(
            parse(&data_header(7)).unwrap(),
            Packet::Data {
                block: 7,
                data: b""
            }
        );
        assert_eq!(ack(258), [0, 4, 1, 2]);
        assert_eq!(parse(&ack(258)).unwrap(), Packet::Ack { block: 258 });
        // Trailing padding after an ACK is tolerated.
        assert_eq!(
            parse(b"\x00\x04\x00\x09\x00\x00").unwrap(),
            Packet::Ack { block: 9 }
        );
    }

    #[test]
    fn error_packets() {
        let mut buf = Vec::new();
        encode_error(&mut buf, error_code::FILE_NOT_FOUND, "File not found");
        assert_eq!(buf, b"\x00\x05\x00\x01File not found\x00");
        assert_eq!(
            parse(&buf).unwrap(),
            Packet::Error {
                code: 1,
                message: "File not found".into()
            }
        );
        // Missing NUL, non-UTF-8 bytes: still decoded.
        match parse(b"\x00\x05\x00\x02d\xe9nied").unwrap() {
            Packet::Error { code, message } => {
                assert_eq!(code, 2);
                assert!(message.starts_with('d') && message.ends_with("nied"));
            }
            other => panic!("{other:?}"),
        }
        // NULs in an outgoing message are dropped, not sent as terminators.
        encode_error(&mut buf, 0, "a\0b");
        assert_eq!(buf, b"\x00\x05\x00\x00ab\x00");
    }

    #[test]
    fn oack() {
        let mut buf = Vec::new();
        encode_oack(&mut buf, &[("blksize", "512"), ("windowsize", "4")]);
        assert_eq!(
            parse(&buf).unwrap(),
            Packet::Oack {
                options: vec![("blksize", "512"), ("windowsize", "4")]
            }
        );
        // An empty OACK is well-formed (no options acknowledged).
        assert_eq!(
            parse(b"\x00\x06").unwrap(),
            Packet::Oack { options: vec![] }
        );
    }

    #[test]
    fn malformed() {
        assert!(parse(b"").is_err());
        assert!(parse(b"\x00").is_err());
        assert!(parse(b"\x00\x09\x00\x00").is_err(), "unknown opcode");
        assert!(parse(b"\x00\x03\x00").is_err(), "truncated DATA");
        assert!(parse(b"\x00\x04").is_err(), "truncated ACK");
        assert!(parse(b"\x00\x06blksize\x00").is_err(), "option w/o value");
        assert!(parse(b"\x00\x06blksize\x00512").is_err(), "no final NUL");
        assert!(parse(b"\x00\x01file").is_err(), "unterminated filename");
        assert!(parse(b"\x00\x01file\x00").is_err(), "no mode");
        assert!(parse(b"\x00\x06\xff\x00a\x00").is_err(), "not UTF-8");
        let e = parse(b"\x00\x09").unwrap_err();
        assert_eq!(e.to_string(), "malformed TFTP packet: unknown opcode");
    }

    #[test]
    fn max_packet_covers_largest_block() {
        assert_eq!(MAX_PACKET, 65468);
        let mut buf = Vec::new();
        encode_data(&mut buf, 1, &vec![7u8; MAX_BLKSIZE as usize]);
        assert_eq!(buf.len(), MAX_PACKET);
    }
}
