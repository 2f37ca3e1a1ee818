//! The log file's format: a magic line, then one checksummed frame per record.
//!
//! ```text
//! file   = "ARFLOG1\n" frame*
//! frame  = len:u32le  len_check:u32le (= !len)  sum:[u8; 8] (= SHA-256(body)[..8])  body:[u8; len]
//! body   = the record as JSON
//! ```
//!
//! `len_check` makes a damaged length loud instead of letting it pass for a frame
//! that was cut short; `sum` catches a damaged body. Only an incomplete frame at the
//! very end (a write that was never acknowledged, cut by a crash or a power loss)
//! may be set aside at open; anything else that does not decode is damage.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::record::Record;

pub const MAGIC: &[u8; 8] = b"ARFLOG1\n";
pub const HEADER_LEN: usize = 16;
/// The largest frame body accepted; records are limited below this when appended.
pub const MAX_BODY: u32 = 4 * 1024 * 1024;

fn sum(body: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(body);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Appends one frame holding `body` to `out`.
pub fn encode(body: &[u8], out: &mut Vec<u8>) {
    let len = body.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&sum(body));
    out.extend_from_slice(body);
}

/// What reading the next frame found.
#[derive(Debug)]
pub enum Next {
    /// A complete frame whose checksums hold, and its total length in the file.
    Frame { body: Vec<u8>, len: u64 },
    /// The file ends exactly here.
    End,
    /// The file ends inside a frame, or in bytes that are all zero: a write that was
    /// never completed. `len` is how many bytes remain.
    Torn { len: u64, reason: String },
    /// Damage: what is here is neither a frame nor the end of one.
    Damaged(String),
}

/// Reads as much as `buf` holds, returning how many bytes there were.
pub fn fill<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// True when every byte left in `reader` is zero; counts them into `count`.
fn rest_is_zero<R: Read>(reader: &mut R, count: &mut u64) -> std::io::Result<bool> {
    let mut buf = [0u8; 8192];
    let mut zero = true;
    loop {
        let n = fill(reader, &mut buf)?;
        if n == 0 {
            return Ok(zero);
        }
        *count += n as u64;
        zero &= buf[..n].iter().all(|b| *b == 0);
    }
}

/// Reads the frame that starts at the reader's position.
pub fn next<R: Read>(reader: &mut R) -> std::io::Result<Next> {
    let mut header = [0u8; HEADER_LEN];
    let got = fill(reader, &mut header)?;
    if got == 0 {
        return Ok(Next::End);
    }
    if got < HEADER_LEN {
        return Ok(Next::Torn { len: got as u64, reason: format!("{got} bytes of a frame header") });
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let len_check = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len != !len_check {
        let mut count = HEADER_LEN as u64;
        let zero = header.iter().all(|b| *b == 0) && rest_is_zero(reader, &mut count)?;
        if zero {
            return Ok(Next::Torn { len: count, reason: format!("{count} zero bytes") });
        }
        return Ok(Next::Damaged("frame header is damaged (its length and length check disagree)".to_owned()));
    }
    if len > MAX_BODY {
        return Ok(Next::Damaged(format!("frame claims {len} bytes, over the limit of {MAX_BODY}")));
    }
    let mut body = vec![0u8; len as usize];
    let got_body = fill(reader, &mut body)?;
    if got_body < body.len() {
        return Ok(Next::Torn {
            len: (HEADER_LEN + got_body) as u64,
            reason: format!("a frame of {len} bytes with only {got_body} written"),
        });
    }
    if header[8..16] != sum(&body) {
        // A header that reached the disk before the end of its body, on a file
        // system that does not order them: the body ends in zeros, and so does the file.
        let mut count = HEADER_LEN as u64 + u64::from(len);
        if body.last() == Some(&0) && rest_is_zero(reader, &mut count)? {
            return Ok(Next::Torn { len: count, reason: format!("a frame of {len} bytes whose end was never written") });
        }
        return Ok(Next::Damaged("frame body does not match its checksum".to_owned()));
    }
    Ok(Next::Frame { body, len: (HEADER_LEN as u64) + u64::from(len) })
}

/// Decodes a frame body as a record.
pub fn decode(body: &[u8]) -> Result<Record, String> {
    serde_json::from_slice(body).map_err(|e| format!("frame does not hold a record: {e}"))
}

/// Every record of a log file, read frame by frame; stops at the first frame that
/// is not complete and sound. For tools and tests that work on the file itself.
pub fn read_records(path: &std::path::Path) -> Result<Vec<Record>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut reader = bytes.get(MAGIC.len()..).ok_or("the file is shorter than its magic line")?;
    let mut records = Vec::new();
    loop {
        match next(&mut reader).map_err(|e| e.to_string())? {
            Next::Frame { body, .. } => records.push(decode(&body)?),
            Next::End => return Ok(records),
            other => return Err(format!("after record {}: {other:?}", records.len())),
        }
    }
}

/// Writes `records` as a log file with sound frames, whatever the records say: what
/// someone with the disk and this description of the format can do. Tests use it to
/// tamper as an attacker would.
pub fn write_records(path: &std::path::Path, records: &[Record]) -> std::io::Result<()> {
    let mut out = MAGIC.to_vec();
    for record in records {
        encode(&serde_json::to_vec(record).map_err(std::io::Error::other)?, &mut out);
    }
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            encode(body, &mut out);
        }
        out
    }

    fn read_all(bytes: &[u8]) -> Vec<Next> {
        let mut reader = bytes;
        let mut out = Vec::new();
        loop {
            let next = next(&mut reader).unwrap();
            let stop = !matches!(next, Next::Frame { .. });
            out.push(next);
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn frames_read_back_and_end_cleanly() {
        let bytes = frames(&[b"one", b"two"]);
        let read = read_all(&bytes);
        assert!(matches!(&read[0], Next::Frame { body, len: 19 } if body == b"one"));
        assert!(matches!(read[2], Next::End));
    }

    #[test]
    fn every_single_byte_flip_is_damage_never_a_clean_end() {
        let bytes = frames(&[b"{\"a\":1}", b"{\"b\":2}"]);
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut copy = bytes.clone();
                copy[i] ^= flip;
                let read = read_all(&copy);
                let last = read.last().unwrap();
                assert!(matches!(last, Next::Damaged(_)), "byte {i} ^ {flip:#x} read as {last:?}");
            }
        }
    }

    #[test]
    fn a_cut_final_frame_is_torn_not_damaged() {
        let bytes = frames(&[b"one", b"two-two-two"]);
        for cut in 20..bytes.len() {
            let read = read_all(&bytes[..cut]);
            assert!(matches!(read.last().unwrap(), Next::Torn { .. }), "cut at {cut}: {:?}", read.last());
        }
        let mut zeros = frames(&[b"one"]);
        zeros.extend_from_slice(&[0u8; 4096]);
        assert!(matches!(read_all(&zeros).last().unwrap(), Next::Torn { len: 4096, .. }));
    }
}
