//! The SIP message: a zero-copy parse of one message held in a `Bytes`
//! buffer (RFC 3261 §7), its serialization, and stream framing (§18.3).
//!
//! Header values are slices of the received buffer; a folded value (§7.3.1)
//! is the only case that allocates, to replace the fold with one space.
//! The head is checked to be UTF-8 once, when parsed (§7.3.1: SIP text is
//! UTF-8), so reading a header as text costs no validation: a REGISTER's
//! path reads headers some 40 times.

use super::header::{split_list, HeaderName};
use super::method::Method;
use super::text::decimal;
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use std::fmt;

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("message head is not UTF-8")]
    NotText,
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("malformed header line {0}")]
    HeaderLine(usize),
    #[error("no end of headers (missing empty line)")]
    Incomplete,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("body shorter than Content-Length")]
    Truncated,
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
}

/// First line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: ByteString },
    Response { status: u16, reason: ByteString },
}

/// One header line; `value` is trimmed and unfolded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: ByteString,
}

/// A parsed SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub body: Bytes,
}

const SIP_VERSION: &[u8] = b"SIP/2.0";

impl SipMessage {
    /// Parses a message from a datagram (RFC 3261 §18.3): a missing
    /// Content-Length means the body runs to the end; bytes past
    /// Content-Length are discarded.
    pub fn parse_datagram(buf: Bytes) -> Result<SipMessage, ParseError> {
        let buf = skip_leading_crlf(buf);
        let (mut msg, body_start) = parse_head(&buf)?;
        let rest = buf.len() - body_start;
        let len = match content_length(&msg)? {
            Some(n) if n > rest => return Err(ParseError::Truncated),
            Some(n) => n,
            None => rest,
        };
        msg.body = buf.slice(body_start..body_start + len);
        Ok(msg)
    }

    /// Parses exactly one framed message (see [`frame_len`]).
    pub fn parse_framed(buf: Bytes) -> Result<SipMessage, ParseError> {
        let (mut msg, body_start) = parse_head(&buf)?;
        let len = content_length(&msg)?.unwrap_or(0);
        if body_start + len > buf.len() {
            return Err(ParseError::Truncated);
        }
        msg.body = buf.slice(body_start..body_start + len);
        Ok(msg)
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    /// Reason phrase of a response ("" for requests).
    pub fn reason(&self) -> &str {
        match &self.start {
            StartLine::Response { reason, .. } => reason,
            StartLine::Request { .. } => "",
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// First value of a header, as text (None if absent).
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.iter().find(|h| &h.name == name).map(|h| &*h.value)
    }

    /// Every value of a header, splitting comma-joined list headers.
    pub fn header_values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| &*h.value)
            .flat_map(move |v| {
                let (list, whole) = if name.is_list() {
                    (Some(split_list(v)), None)
                } else {
                    (None, Some(v))
                };
                list.into_iter().flatten().chain(whole)
            })
    }

    /// First header value whose name matches `name` textually (for
    /// extension headers).
    pub fn header_named(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.matches(name)).map(|h| &*h.value)
    }

    /// Whether the To header carries a tag: the request is inside a dialog
    /// (RFC 3261 §12.2.2), or the response ends an early dialog.
    pub fn has_to_tag(&self) -> bool {
        self.header(&HeaderName::To).is_some_and(super::addr::has_tag)
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header(&HeaderName::CallId)
    }

    /// The topmost Via value (first element of the first Via header).
    pub fn top_via(&self) -> Option<&str> {
        // One Via per header line is the usual case: no list to split.
        let first = self.headers.iter().find(|h| h.name == HeaderName::Via)?;
        if !first.value.contains(',') {
            let v = first.value.trim();
            if !v.is_empty() {
                return Some(v);
            }
        }
        self.header_values(&HeaderName::Via).next()
    }

    /// Replaces the first element of the first Via header (used to add
    /// `received`/`rport`, RFC 3261 §18.2.1, RFC 3581 §4).
    pub fn set_top_via(&mut self, new_top: String) {
        if let Some(h) = self.headers.iter_mut().find(|h| h.name == HeaderName::Via) {
            let mut v = new_top;
            // Only a comma-joined Via has elements after the top one to keep.
            if h.value.contains(',') {
                for r in split_list(&h.value).skip(1) {
                    v.push_str(", ");
                    v.push_str(r);
                }
            }
            h.value = ByteString::from(v);
        }
    }

    pub fn push_header(&mut self, name: HeaderName, value: impl Into<ByteString>) {
        self.headers.push(Header {
            name,
            value: value.into(),
        });
    }

    pub fn remove_headers(&mut self, name: &HeaderName) {
        self.headers.retain(|h| &h.name != name);
    }

    /// Serializes with a correct Content-Length for the body.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.put_slice(method.as_str().as_bytes());
                out.put_u8(b' ');
                out.put_slice(uri.as_bytes());
                out.put_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { status, reason } => {
                out.put_slice(b"SIP/2.0 ");
                out.put_slice(decimal(u32::from(*status), &mut [0; 10]));
                out.put_u8(b' ');
                out.put_slice(reason.as_bytes());
                out.put_slice(b"\r\n");
            }
        }
        for h in self.headers.iter().filter(|h| h.name != HeaderName::ContentLength) {
            out.put_slice(h.name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(h.value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"Content-Length: ");
        out.put_slice(decimal(
            u32::try_from(self.body.len()).unwrap_or(u32::MAX),
            &mut [0; 10],
        ));
        out.put_slice(b"\r\n\r\n");
        out.put_slice(&self.body);
        out.freeze()
    }
}

impl fmt::Display for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Stream framing (RFC 3261 §18.3): given the bytes received so far on a
/// connection, returns how many leading bytes are CRLF keep-alives to drop
/// (RFC 5626 §3.5.1) and, once a whole message is buffered, its length.
pub fn frame_len(buf: &[u8], max_size: usize) -> Result<(usize, Option<usize>), ParseError> {
    let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let buf = &buf[skip..];
    let Some(head_end) = find_head_end(buf) else {
        if buf.len() > max_size {
            return Err(ParseError::TooLarge(max_size));
        }
        return Ok((skip, None));
    };
    let mut len = None;
    for line in buf[..head_end].split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if matches!(HeaderName::parse(name), HeaderName::ContentLength) {
            len = Some(parse_content_length(trim(&line[colon + 1..]))?);
        }
    }
    let total = head_end + len.unwrap_or(0);
    if total > max_size {
        return Err(ParseError::TooLarge(max_size));
    }
    Ok((skip, (buf.len() >= total).then_some(total)))
}

fn skip_leading_crlf(buf: Bytes) -> Bytes {
    let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    buf.slice(skip..)
}

/// Index just past the blank line ending the headers (CRLFCRLF, or bare
/// LFLF which RFC 3261 §7 tolerates in practice).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    for i in memchr::memchr_iter(b'\n', buf) {
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i + 2),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            _ => {}
        }
    }
    None
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn parse_content_length(v: &[u8]) -> Result<usize, ParseError> {
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::ContentLength);
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::ContentLength)
}

fn content_length(msg: &SipMessage) -> Result<Option<usize>, ParseError> {
    match msg.headers.iter().find(|h| h.name == HeaderName::ContentLength) {
        Some(h) => parse_content_length(h.value.as_bytes()).map(Some),
        None => Ok(None),
    }
}

/// Parses start line and headers; returns the message (empty body) and the
/// offset where the body starts.
fn parse_head(buf: &Bytes) -> Result<(SipMessage, usize), ParseError> {
    if buf.is_empty() {
        return Err(ParseError::Empty);
    }
    let head_end = find_head_end(buf).ok_or(ParseError::Incomplete)?;
    let head = ByteString::try_from(buf.slice(..head_end)).map_err(|_| ParseError::NotText)?;
    // Split into physical lines, keeping absolute offsets.
    let mut lines: Vec<(usize, usize)> = Vec::with_capacity(16);
    let mut pos = 0;
    while pos < head_end {
        let nl = memchr::memchr(b'\n', &buf[pos..head_end]).map_or(head_end, |i| pos + i);
        let mut end = nl;
        if end > pos && buf[end - 1] == b'\r' {
            end -= 1;
        }
        lines.push((pos, end));
        pos = nl + 1;
    }
    // The last line is the blank terminator.
    while matches!(lines.last(), Some(&(s, e)) if s == e) {
        lines.pop();
    }
    let (first_s, first_e) = *lines.first().ok_or(ParseError::StartLine)?;
    let start = parse_start_line(&head, first_s, first_e)?;
    let mut headers: Vec<Header> = Vec::with_capacity(lines.len());
    let mut i = 1;
    while i < lines.len() {
        let (s, e) = lines[i];
        let line = &buf[s..e];
        let colon = memchr::memchr(b':', line).ok_or(ParseError::HeaderLine(i + 1))?;
        let name_raw = trim(&line[..colon]);
        if name_raw.is_empty() || !name_raw.iter().all(|&b| is_token_char(b)) {
            return Err(ParseError::HeaderLine(i + 1));
        }
        let name = HeaderName::parse(name_raw);
        let value_start = s + colon + 1;
        // Continuation lines start with SP or HT (§7.3.1).
        let mut last = i;
        while last + 1 < lines.len() {
            let (ns, ne) = lines[last + 1];
            if ns < ne && (buf[ns] == b' ' || buf[ns] == b'\t') {
                last += 1;
            } else {
                break;
            }
        }
        let value = if last == i {
            let raw = &buf[value_start..e];
            let t = trim(raw);
            let off = value_start + (t.as_ptr() as usize - raw.as_ptr() as usize);
            cut(&head, off, off + t.len())
        } else {
            let mut joined = Vec::with_capacity(e - value_start + 64);
            joined.extend_from_slice(trim(&buf[value_start..e]));
            for &(ns, ne) in &lines[i + 1..=last] {
                let part = trim(&buf[ns..ne]);
                if !part.is_empty() {
                    if !joined.is_empty() {
                        joined.push(b' ');
                    }
                    joined.extend_from_slice(part);
                }
            }
            ByteString::try_from(joined).map_err(|_| ParseError::NotText)?
        };
        headers.push(Header { name, value });
        i = last + 1;
    }
    Ok((
        SipMessage {
            start,
            headers,
            body: Bytes::new(),
        },
        head_end,
    ))
}

/// `head[s..e]`, sharing the head's buffer. The parser cuts only next to
/// ASCII delimiters, so at char boundaries.
fn cut(head: &ByteString, s: usize, e: usize) -> ByteString {
    head.slice_ref(&head[s..e])
}

fn parse_start_line(head: &ByteString, s: usize, e: usize) -> Result<StartLine, ParseError> {
    let line = &head.as_bytes()[s..e];
    if line.starts_with(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp1 = line.iter().position(|&b| b == b' ').ok_or(ParseError::StartLine)?;
        if !line[..sp1].eq_ignore_ascii_case(SIP_VERSION) {
            return Err(ParseError::Version);
        }
        let rest = &line[sp1 + 1..];
        let sp2 = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let code = &rest[..sp2];
        if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::StartLine);
        }
        let status: u16 = std::str::from_utf8(code).unwrap().parse().unwrap();
        if !(100..=699).contains(&status) {
            return Err(ParseError::StartLine);
        }
        let reason_start = s + sp1 + 1 + (sp2 + 1).min(rest.len());
        return Ok(StartLine::Response {
            status,
            reason: cut(head, reason_start, e),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (exactly single spaces, §25)
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().ok_or(ParseError::StartLine)?;
    let uri = parts.next().ok_or(ParseError::StartLine)?;
    let version = parts.next().ok_or(ParseError::StartLine)?;
    if parts.next().is_some() || method.is_empty() || uri.is_empty() {
        return Err(ParseError::StartLine);
    }
    if !version.eq_ignore_ascii_case(SIP_VERSION) {
        return Err(ParseError::Version);
    }
    if !method.iter().all(|&b| is_token_char(b)) {
        return Err(ParseError::StartLine);
    }
    if !uri.contains(&b':') {
        return Err(ParseError::StartLine);
    }
    let uri_off = s + method.len() + 1;
    Ok(StartLine::Request {
        method: Method::parse(method),
        uri: cut(head, uri_off, uri_off + uri.len()),
    })
}

/// RFC 3261 §25.1 `token` characters.
pub fn is_token_char(b: u8) -> bool {
    TOKEN_CHARS[usize::from(b)]
}

/// RFC 3261 §25.1 token characters, as a table: this runs for every byte
/// of every header name.
const TOKEN_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
        i += 1;
    }
    t
};
