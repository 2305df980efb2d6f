//! Inbound data files (`core::inbound_file`): the bytes are a file, read by `Lines` through a
//! buffer whose size the first byte picks, each line parsed as a line of a `.sync` and of an
//! `.overwrite` file, and the first line parsed as a file name. In the stream `0xFE n` stands
//! for `n` KB of `x` (so that lines longer than the limit are reached from small inputs) and
//! `0xFD` for a read error (a truncated gzip stream).
#![no_main]

use std::io::{self, BufReader, Read};

use libfuzzer_sys::fuzz_target;
use tributary::core::inbound::{
    Identity, OpKind, SourceName, MAX_SIGNALS, MAX_TRAIT_IDS, MAX_VALUE_BYTES,
};
use tributary::core::inbound_file::{
    parse_file_name, parse_line, FileName, LineReadError, Lines, PerUserLimit, MAX_LINES_PER_USER,
    MAX_LINE_BYTES,
};

/// Expanded `x` per input at most: two lines over the limit, and each input stays quick.
const EXPANSION_BUDGET: usize = 256 << 10;
/// Read buffer sizes the first byte picks from: small ones cut lines (and CRLF) across reads,
/// large ones keep the expanded runs quick.
const CAPACITIES: [usize; 8] = [1, 2, 3, 7, 64, 4096, 8192, 65536];
/// Longest message a refused line or name may give.
const MAX_MESSAGE: usize = 512;

struct Expanding<'a> {
    data: &'a [u8],
    run: usize,
    budget: usize,
}

impl Read for Expanding<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.run > 0 {
                let n = self.run.min(buf.len());
                buf[..n].fill(b'x');
                self.run -= n;
                return Ok(n);
            }
            match self.data {
                [] => return Ok(0),
                [0xFD, ..] => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated"));
                }
                [0xFE, count, rest @ ..] => {
                    self.run = (usize::from(*count) * 1024).min(self.budget);
                    self.budget -= self.run;
                    self.data = rest;
                }
                _ => {
                    // Up to the next marker, looked for within `buf`'s length so that a read
                    // costs what it gives; a lone 0xFE at the end is a plain byte.
                    let window = &self.data[..buf.len().min(self.data.len())];
                    let n = window[1..]
                        .iter()
                        .position(|&b| b == 0xFD || b == 0xFE)
                        .map_or(window.len(), |i| i + 1);
                    buf[..n].copy_from_slice(&self.data[..n]);
                    self.data = &self.data[n..];
                    return Ok(n);
                }
            }
        }
    }
}

/// The lines `data` holds when it has no markers: `Ok(bytes)` or `Err(())` for one too long.
fn model(data: &[u8]) -> Vec<Result<Vec<u8>, ()>> {
    if data.is_empty() {
        return Vec::new();
    }
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    data.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > MAX_LINE_BYTES {
                return Err(());
            }
            let line = match line.strip_prefix(b"\xEF\xBB\xBF") {
                Some(rest) if i == 0 => rest,
                _ => line,
            };
            Ok(line.to_vec())
        })
        .collect()
}

fn check_name(text: &str) {
    match parse_file_name(text) {
        Ok(f) => {
            assert!(f.target_dpid.is_some() || !matches!(f.dpid, 20914 | 20915));
            assert!((0..=9_999_999_999).contains(&f.timestamp));
            let printed = format!(
                "ftp_dpm_{}{}_{:010}.{}{}{}",
                f.dpid,
                f.target_dpid.map(|t| format!("_{t}")).unwrap_or_default(),
                f.timestamp,
                if f.overwrite { "overwrite" } else { "sync" },
                f.split.map(|n| format!(".{n}")).unwrap_or_default(),
                if f.gzip { ".gz" } else { "" },
            );
            assert_eq!(parse_file_name(&printed), Ok(f), "{printed}");
        }
        Err(e) => assert!(e.len() <= MAX_MESSAGE, "{e}"),
    }
}

fn check_line(bytes: &[u8], file: &FileName) -> Option<String> {
    let parsed = parse_line(bytes, file);
    if !file.overwrite && bytes.last() != Some(&b'\r') {
        let mut with_cr = bytes.to_vec();
        with_cr.push(b'\r');
        assert_eq!(
            parse_line(&with_cr, file),
            parsed,
            "one trailing \\r changes nothing"
        );
    }
    let op = match parsed {
        Ok(Some(op)) => op,
        Ok(None) => {
            assert!(bytes.iter().all(u8::is_ascii_whitespace));
            return None;
        }
        Err(e) => {
            assert!(e.message.len() <= MAX_MESSAGE, "{}", e.message);
            return None;
        }
    };
    let [Identity { source, value }] = &op.identities[..] else {
        panic!("one identity: {:?}", op.identities);
    };
    assert_eq!(*source, SourceName::DataSource(file.id_source()));
    assert!(!value.is_empty() && value.len() <= MAX_VALUE_BYTES);
    assert!(!value.chars().any(char::is_control));
    assert_eq!(op.target_data_sources, [file.data_source()]);
    let kind = if file.overwrite {
        OpKind::Overwrite
    } else {
        OpKind::Append
    };
    assert_eq!(op.kind, kind);
    assert!(op.trait_ids.len() + op.remove_trait_ids.len() <= MAX_TRAIT_IDS);
    assert!(op
        .trait_ids
        .iter()
        .chain(&op.remove_trait_ids)
        .all(|&id| id > 0));
    if file.overwrite {
        assert!(op.remove_trait_ids.is_empty());
    } else {
        // A line with items gives something to do.
        assert!(
            !(op.trait_ids.is_empty() && op.remove_trait_ids.is_empty() && op.signals.is_empty())
        );
    }
    assert!(op.signals.len() <= MAX_SIGNALS);
    for (k, v) in &op.signals {
        assert!(!k.is_empty() && k.len() <= MAX_VALUE_BYTES && v.len() <= MAX_VALUE_BYTES);
        assert!(!k.chars().chain(v.chars()).any(char::is_control));
    }
    Some(value.clone())
}

fuzz_target!(|data: &[u8]| {
    let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
    check_name(&String::from_utf8_lossy(first));

    let sync = FileName {
        dpid: 20914,
        target_dpid: Some(21),
        overwrite: false,
        split: None,
        gzip: false,
        timestamp: 1_234_567_890,
    };
    let overwrite = FileName {
        dpid: 21,
        target_dpid: None,
        overwrite: true,
        split: Some(2),
        gzip: true,
        ..sync
    };
    let capacity = CAPACITIES[usize::from(data.first().copied().unwrap_or(0)) % CAPACITIES.len()];
    let reader = Expanding {
        data,
        run: 0,
        budget: EXPANSION_BUDGET,
    };
    let mut lines = Lines::new(BufReader::with_capacity(capacity, reader));
    let expected = (!data.iter().any(|&b| b == 0xFD || b == 0xFE)).then(|| model(data));
    let mut got: Vec<Result<Vec<u8>, ()>> = Vec::new();
    let mut number = 0;
    let mut limit = PerUserLimit::new();
    let mut run: (String, u32) = (String::new(), 0);
    while let Some(next) = lines.next_line() {
        number += 1;
        match next {
            Ok(line) => {
                assert_eq!(line.number, number);
                assert!(line.bytes.len() <= MAX_LINE_BYTES);
                assert!(!line.bytes.contains(&b'\n'));
                got.push(Ok(line.bytes.clone()));
                let user = check_line(&line.bytes, &sync);
                check_line(&line.bytes, &overwrite);
                if let Some(user) = user {
                    if run.0 == user {
                        run.1 += 1;
                    } else {
                        run = (user.clone(), 1);
                    }
                    assert_eq!(limit.admit(&user), run.1 <= MAX_LINES_PER_USER);
                }
            }
            Err(LineReadError::TooLong { line }) => {
                assert_eq!(line, number);
                got.push(Err(()));
            }
            Err(LineReadError::Io { line, .. }) => {
                assert_eq!(line, number);
                assert!(expected.is_none(), "no read error without 0xFD");
                assert!(lines.next_line().is_none());
                break;
            }
        }
    }
    assert!(lines.next_line().is_none());
    if let Some(expected) = expected {
        assert_eq!(got, expected);
    }
});
