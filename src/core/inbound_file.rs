//! AAM inbound data files (AAM's "Amazon S3 Name and File Size Requirements for Inbound Data
//! Files" and "Inbound Data File Contents"; AAM-REFERENCE §2.3): the file name, the
//! lines, a bounded line reader and the 200-lines-per-user rule. Each line becomes one
//! [`Op`]; reading the file, applying the ops and reporting are the import job's.
//!
//! # The format
//!
//! A name `ftp_dpm_<DPID>[_<TARGET DPID>]_<10-digit unix time>.sync|.overwrite[.<n>][.gz]`:
//! the user ids are `<DPID>`'s, the traits written belong to `<TARGET DPID>` when there is one
//! (required for the global device data sources 20914, GAID, and 20915, IDFA, whose ids no one
//! owns) and to `<DPID>` otherwise. `.sync` adds and removes; `.overwrite` replaces the data
//! source's traits of each user listed. `.<n>` numbers the parts of a split upload; `.gz` is
//! gzip, which the caller decompresses around [`Lines`].
//!
//! A line is `<user id><TAB><items>`, items separated by commas:
//!
//! - `d_sid=<trait id>` and `<trait id>:1` add a trait by id;
//! - `d_unsid=<trait id>`, `<trait id>:0` and `<trait id>:-1` remove one;
//! - `ic=<code>` and a bare item (`12345`, `"a,b"`) are the signal `ic` (for onboarded traits,
//!   whose rule is `ic == "<code>"`);
//! - `key=value` and `"key"="value"` are signals. Quotes enclose a whole key or value, which
//!   may then hold commas and `=`; there is no escape inside them (AAM has none), so a value
//!   cannot hold `"`.
//!
//! # Beyond AAM's documentation, and why
//!
//! - Items may also be separated by tabs, as some of AAM's own examples are; whitespace next
//!   to a comma is not an item, and a trailing comma or whitespace is ignored (files written
//!   by hand or by spreadsheets end lines so).
//! - `<trait id>:1` adds: the counterpart of `:0`, which AAM does not document.
//! - A CRLF line end, a last line without a newline and a UTF-8 byte order mark at the start
//!   of the file are read as if they were not there.
//! - Lines that hold only whitespace are skipped rather than refused.
//!
//! An item whose colon is followed by anything other than `0`, `-1` or `1` (`a:b`) is a bare
//! item, as integration codes may hold colons; one followed by those but not by a trait id
//! (`abc:0`) is refused, as it can only be a mistyped trait id.
//!
//! # Limits
//!
//! A line is at most [`MAX_LINE_BYTES`] (AAM's 102,400) without its line end; a longer one is
//! skipped without being held in memory. At most [`MAX_TRAIT_IDS`] trait ids (added and
//! removed together) and [`MAX_SIGNALS`] signals per line, keys, values and user ids at most
//! [`MAX_VALUE_BYTES`], no control characters in any of them; at most [`MAX_LINES_PER_USER`]
//! lines per user id ([`PerUserLimit`]). A user id is taken as written: one that starts or
//! ends with a space is refused, not trimmed, as trimming could merge two users. Byte offsets
//! in messages count from 0.

use std::fmt;
use std::io::{self, BufRead};

use super::inbound::{
    Identity, Op, OpKind, SourceName, MAX_SIGNALS, MAX_TRAIT_IDS, MAX_VALUE_BYTES,
};

/// Longest line, without its line end (AAM's limit).
pub const MAX_LINE_BYTES: usize = 102_400;
/// Lines AAM reads per user id; the rest are discarded.
pub const MAX_LINES_PER_USER: u32 = 200;
/// Global device data sources (GAID, IDFA): their files must name the data source written to.
const GLOBAL_DEVICE_DPIDS: [u32; 2] = [20914, 20915];
/// How much of an offending name or item a message quotes: enough to find it in the file.
const SHOWN_BYTES: usize = 64;

/// What an inbound file's name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileName {
    /// The data source of the user ids.
    pub dpid: u32,
    /// The data source whose traits are written, when it is not `dpid`.
    pub target_dpid: Option<u32>,
    /// `.overwrite` rather than `.sync`.
    pub overwrite: bool,
    /// `.<n>` of a split upload.
    pub split: Option<u32>,
    /// `.gz`.
    pub gzip: bool,
    /// Unix seconds, as the uploader wrote them.
    pub timestamp: i64,
}

impl FileName {
    /// The data source whose traits the file writes.
    pub fn data_source(&self) -> u32 {
        self.target_dpid.unwrap_or(self.dpid)
    }

    /// The namespace of the file's user ids.
    pub fn id_source(&self) -> u32 {
        self.dpid
    }
}

/// Reads an inbound file's name; of a path, what follows the last `/`.
pub fn parse_file_name(name: &str) -> Result<FileName, String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let file = file_name(base).map_err(|why| {
        format!(
            "expected ftp_dpm_<DPID>[_<TARGET DPID>]_<10-digit unix time>.sync|.overwrite\
             [.<n>][.gz], got {} ({why})",
            shown(base)
        )
    })?;
    if file.target_dpid.is_none() && GLOBAL_DEVICE_DPIDS.contains(&file.dpid) {
        // The shape is right; what is missing is said on its own, so that the fix is plain.
        return Err(format!(
            "data source {} needs the target data owner's DPID",
            file.dpid
        ));
    }
    Ok(file)
}

fn file_name(base: &str) -> Result<FileName, String> {
    let rest = base
        .strip_prefix("ftp_dpm_")
        .ok_or("it does not start with ftp_dpm_")?;
    let (numbers, suffix) = rest
        .split_once('.')
        .ok_or("no .sync or .overwrite after the numbers")?;
    let numbers: Vec<&str> = numbers.splitn(4, '_').collect();
    let (dpid, target, time) = match numbers[..] {
        [dpid, time] => (dpid, None, time),
        [dpid, target, time] => (dpid, Some(target), time),
        _ => return Err("expected 2 or 3 numbers separated by _".into()),
    };
    let dpid = number(dpid, "DPID")?;
    let target_dpid = target.map(|t| number(t, "target DPID")).transpose()?;
    if time.len() != 10 || !time.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the unix time {} is not 10 digits", shown(time)));
    }
    let timestamp: i64 = time
        .parse()
        .map_err(|_| format!("the unix time {} is not a number", shown(time)))?;

    let mut parts = suffix.split('.');
    let overwrite = match parts.next() {
        Some("sync") => false,
        Some("overwrite") => true,
        _ => return Err("no .sync or .overwrite after the numbers".into()),
    };
    let mut next = parts.next();
    let mut split = None;
    if let Some(n) = next.filter(|n| *n != "gz") {
        split = Some(number(n, "split number")?);
        next = parts.next();
    }
    let gzip = next == Some("gz");
    if gzip {
        next = parts.next();
    }
    if let Some(extra) = next {
        return Err(format!(
            "unexpected {} at the end",
            shown(&format!(".{extra}"))
        ));
    }
    Ok(FileName {
        dpid,
        target_dpid,
        overwrite,
        split,
        gzip,
        timestamp,
    })
}

fn number(text: &str, what: &str) -> Result<u32, String> {
    // `u32::from_str` takes a leading `+`, which a file name has no business holding.
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse() {
            return Ok(n);
        }
    }
    Err(format!("{what} {} is not a number below 2^32", shown(text)))
}

/// Why a line was refused. The message names the item but not the line: the caller knows its
/// number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub message: String,
}

impl LineError {
    fn new(message: impl Into<String>) -> Self {
        LineError {
            message: message.into(),
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LineError {}

/// One line of `file` as an op; `None` for a line of whitespace only. A trailing `\r` is
/// ignored.
///
/// In an `.overwrite` file the removals (`d_unsid=`, `:0`, `:-1`) are checked and then
/// ignored, as AAM ignores them: the line already says every trait the user keeps.
pub fn parse_line(line: &[u8], file: &FileName) -> Result<Option<Op>, LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let line = std::str::from_utf8(line)
        .map_err(|e| LineError::new(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let (user, items) = line.split_once('\t').ok_or_else(|| {
        LineError::new("no tab after the user id (a line is <user id><TAB><items>)")
    })?;
    check_user(user)?;
    let mut op = Op {
        identities: vec![Identity {
            source: SourceName::DataSource(file.id_source()),
            value: user.to_string(),
        }],
        target_data_sources: vec![file.data_source()],
        kind: if file.overwrite {
            OpKind::Overwrite
        } else {
            OpKind::Append
        },
        ..Op::default()
    };
    let mut count = 0;
    for_each_item(items, |number, item| {
        count = number;
        add_item(&mut op, item, file.overwrite)
            .map_err(|why| LineError::new(format!("item {number} {}: {why}", shown(item))))
    })?;
    if count == 0 {
        return Err(LineError::new("no items after the user id"));
    }
    Ok(Some(op))
}

fn check_user(user: &str) -> Result<(), LineError> {
    if user.is_empty() {
        return Err(LineError::new("empty user id"));
    }
    if user.len() > MAX_VALUE_BYTES {
        return Err(LineError::new(format!(
            "user id {} is longer than {MAX_VALUE_BYTES} bytes ({})",
            shown(user),
            user.len()
        )));
    }
    if user.chars().any(char::is_control) {
        return Err(LineError::new(format!(
            "user id {} has a control character",
            shown(user)
        )));
    }
    // Two spellings of one id would be two profiles; better said than guessed.
    if user.starts_with(' ') || user.ends_with(' ') {
        return Err(LineError::new(format!(
            "user id {} starts or ends with a space",
            shown(user)
        )));
    }
    Ok(())
}

/// Calls `f` with each item (1-based number, spaces trimmed) of the text after the user id.
/// Commas separate items; tabs do too, but only as whitespace does, so that `a,<TAB>b` is two
/// items while `a,,b` has an empty one.
fn for_each_item(
    items: &str,
    mut f: impl FnMut(usize, &str) -> Result<(), LineError>,
) -> Result<(), LineError> {
    let mut number = 0;
    // Whether the text since the last comma held an item.
    let mut since_comma = false;
    let mut start = 0;
    let mut quoted = false;
    let mut emit = |piece: &str, number: &mut usize, since_comma: &mut bool| {
        let piece = piece.trim_matches(' ');
        if piece.is_empty() {
            return Ok(());
        }
        *number += 1;
        *since_comma = true;
        f(*number, piece)
    };
    for (i, b) in items.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\t' if !quoted => {
                emit(&items[start..i], &mut number, &mut since_comma)?;
                start = i + 1;
            }
            b',' if !quoted => {
                emit(&items[start..i], &mut number, &mut since_comma)?;
                if !since_comma {
                    let why = if number == 0 {
                        "nothing before the first comma"
                    } else {
                        "nothing between two commas"
                    };
                    return Err(LineError::new(format!(
                        "item {}: empty ({why})",
                        number + 1
                    )));
                }
                since_comma = false;
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = &items[start..];
    if quoted {
        return Err(LineError::new(format!(
            "item {} {}: unterminated quote",
            number + 1,
            shown(last.trim_matches(' '))
        )));
    }
    emit(last, &mut number, &mut since_comma)
}

fn add_item(op: &mut Op, item: &str, overwrite: bool) -> Result<(), String> {
    if let Some((key, value)) = split_pair(item) {
        let key = unquote(key)?;
        let value = unquote(value)?;
        return match key {
            "" => Err("empty key".into()),
            "d_sid" => add_trait(op, trait_id(value)?, true, overwrite),
            "d_unsid" => add_trait(op, trait_id(value)?, false, overwrite),
            "ic" if value.is_empty() => Err("empty integration code".into()),
            _ => add_signal(op, key, value),
        };
    }
    if !item.starts_with('"') {
        if let Some((id, state)) = item.rsplit_once(':') {
            let add = match state {
                "1" => Some(true),
                "0" | "-1" => Some(false),
                _ => None,
            };
            if let Some(add) = add {
                return add_trait(op, trait_id(id)?, add, overwrite);
            }
        }
    }
    match unquote(item)? {
        "" => Err("empty integration code".into()),
        code => add_signal(op, "ic", code),
    }
}

/// `key=value` split at the first `=` outside quotes.
fn split_pair(item: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    for (i, b) in item.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'=' if !quoted => return Some((&item[..i], &item[i + 1..])),
            _ => {}
        }
    }
    None
}

/// A key or value: `"…"` or text without quotes.
fn unquote(text: &str) -> Result<&str, String> {
    match text.strip_prefix('"') {
        Some(rest) => match rest.strip_suffix('"') {
            Some(inner) if !inner.contains('"') => Ok(inner),
            _ => Err("text after a closing quote (quotes enclose a whole key or value)".into()),
        },
        None if text.contains('"') => {
            Err("a quote inside unquoted text (quotes enclose a whole key or value)".into())
        }
        None => Ok(text),
    }
}

fn trait_id(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a trait id".into());
    }
    match text.parse::<u64>() {
        Ok(0) => Err("trait ids start at 1".into()),
        Ok(id) => Ok(id),
        Err(_) => Err("not a trait id (too large)".into()),
    }
}

fn add_trait(op: &mut Op, id: u64, add: bool, overwrite: bool) -> Result<(), String> {
    if !add && overwrite {
        return Ok(());
    }
    if op.trait_ids.len() + op.remove_trait_ids.len() >= MAX_TRAIT_IDS {
        return Err(format!("more than {MAX_TRAIT_IDS} trait ids on one line"));
    }
    if add {
        op.trait_ids.push(id);
    } else {
        op.remove_trait_ids.push(id);
    }
    Ok(())
}

fn add_signal(op: &mut Op, key: &str, value: &str) -> Result<(), String> {
    for (what, text) in [("key", key), ("value", value)] {
        if text.len() > MAX_VALUE_BYTES {
            return Err(format!("{what} longer than {MAX_VALUE_BYTES} bytes"));
        }
        if text.chars().any(char::is_control) {
            return Err(format!("control character in the {what}"));
        }
    }
    if op.signals.len() >= MAX_SIGNALS {
        return Err(format!("more than {MAX_SIGNALS} signals on one line"));
    }
    op.signals.push((key.to_string(), value.to_string()));
    Ok(())
}

/// `text` quoted for a message, escaped, and cut where the escaped text passes
/// [`SHOWN_BYTES`]: a 100 KB item, or a short one of control characters (each escaped to as
/// many as 10 bytes), makes a short message.
fn shown(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        let before = out.len();
        out.extend(c.escape_debug());
        if out.len() > SHOWN_BYTES + 1 {
            out.truncate(before);
            out.push('…');
            break;
        }
    }
    out.push('"');
    out
}

/// One line as read: without its line end (`\n`, `\r\n`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Line {
    /// 1-based.
    pub number: u64,
    pub bytes: Vec<u8>,
}

/// Why [`Lines`] gave no line.
#[derive(Debug)]
pub enum LineReadError {
    /// The line is longer than [`MAX_LINE_BYTES`]; it was skipped, and reading goes on.
    TooLong { line: u64 },
    /// Reading failed (a truncated gzip stream, a disk error) while at `line`; nothing more
    /// is read.
    Io { line: u64, error: io::Error },
}

impl fmt::Display for LineReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineReadError::TooLong { line } => {
                write!(f, "line {line}: longer than {MAX_LINE_BYTES} bytes")
            }
            LineReadError::Io { line, error } => {
                write!(f, "line {line}: could not read the file: {error}")
            }
        }
    }
}

impl std::error::Error for LineReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LineReadError::TooLong { .. } => None,
            LineReadError::Io { error, .. } => Some(error),
        }
    }
}

/// The lines of a file, each at most [`MAX_LINE_BYTES`] held in memory whatever the input.
///
/// [`Lines::next_line`] lends a buffer reused from line to line; the [`Iterator`] gives each
/// line its own. An empty input has no lines (AAM refuses empty files: the caller says so).
pub struct Lines<R: BufRead> {
    reader: R,
    line: Line,
    done: bool,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Self {
        Lines {
            reader,
            line: Line::default(),
            done: false,
        }
    }

    /// The next line, `None` at the end of the input or after an I/O error.
    pub fn next_line(&mut self) -> Option<Result<&Line, LineReadError>> {
        if self.done {
            return None;
        }
        let number = self.line.number + 1;
        self.line.bytes.clear();
        // Room for a `\r` before the `\n` on a line of the longest length.
        let room = MAX_LINE_BYTES + 1;
        let mut started = false;
        let mut too_long = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    self.done = true;
                    return Some(Err(LineReadError::Io {
                        line: number,
                        error,
                    }));
                }
            };
            if chunk.is_empty() {
                if !started {
                    self.done = true;
                    return None;
                }
                break;
            }
            started = true;
            let (content, used, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            if !too_long && self.line.bytes.len() + content.len() <= room {
                self.line.bytes.extend_from_slice(content);
            } else {
                // Only the rest of the line is read, chunk by chunk, and dropped.
                too_long = true;
                self.line.bytes.clear();
            }
            self.reader.consume(used);
            if end {
                break;
            }
        }
        self.line.number = number;
        if self.line.bytes.last() == Some(&b'\r') {
            self.line.bytes.pop();
        }
        if too_long || self.line.bytes.len() > MAX_LINE_BYTES {
            self.line.bytes.clear();
            return Some(Err(LineReadError::TooLong { line: number }));
        }
        if number == 1 && self.line.bytes.starts_with(b"\xEF\xBB\xBF") {
            self.line.bytes.drain(..3);
        }
        Some(Ok(&self.line))
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<Line, LineReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_line().map(|r| r.cloned())
    }
}

/// AAM's [`MAX_LINES_PER_USER`] lines per user id, for a file sorted by user id (AAM's files
/// usually are): counts the current run of lines of one user only. An unsorted file's lines
/// of a user beyond its run are not caught: remembering every user id seen would cost memory
/// in proportion to the file (up to 5 GB uncompressed), where one run costs one id.
#[derive(Clone, Debug, Default)]
pub struct PerUserLimit {
    user: String,
    count: u32,
}

impl PerUserLimit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the next line of `user` is to be applied; `false` past the limit.
    pub fn admit(&mut self, user: &str) -> bool {
        if self.count > 0 && self.user == user {
            if self.count >= MAX_LINES_PER_USER {
                return false;
            }
            self.count += 1;
        } else {
            user.clone_into(&mut self.user);
            self.count = 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_name(name: &str) -> String {
        match parse_file_name(name) {
            Ok(f) => format!(
                "{}{} {} split {:?}{} at {}",
                f.dpid,
                f.target_dpid.map(|t| format!("→{t}")).unwrap_or_default(),
                if f.overwrite { "overwrite" } else { "sync" },
                f.split,
                if f.gzip { " gz" } else { "" },
                f.timestamp
            ),
            Err(e) => e,
        }
    }

    fn check_name(name: &str, expected: &str) {
        assert_eq!(render_name(name), expected, "name {name:?}");
    }

    const SHAPE: &str = "expected ftp_dpm_<DPID>[_<TARGET DPID>]_<10-digit unix time>\
                         .sync|.overwrite[.<n>][.gz], got ";

    fn check_bad_name(name: &str, why: &str) {
        let base = name.rsplit('/').next().unwrap_or(name);
        check_name(name, &format!("{SHAPE}{base:?} ({why})"));
    }

    #[test]
    fn file_names() {
        check_name(
            "ftp_dpm_21_1234567890.sync",
            "21 sync split None at 1234567890",
        );
        check_name(
            "ftp_dpm_20914_21_1234567890.overwrite.3.gz",
            "20914→21 overwrite split Some(3) gz at 1234567890",
        );
        check_name(
            "s3n://bucket/partner/date=2026-12-02/ftp_dpm_21_0000000001.sync.gz",
            "21 sync split None gz at 1",
        );
        check_name(
            "ftp_dpm_21_22_1234567890.sync.0",
            "21→22 sync split Some(0) at 1234567890",
        );
        check_name(
            "ftp_dpm_20915_1234567890.sync",
            "data source 20915 needs the target data owner's DPID",
        );
        check_name(
            "ftp_dpm_20914_1234567890.overwrite.gz",
            "data source 20914 needs the target data owner's DPID",
        );
        check_bad_name("", "it does not start with ftp_dpm_");
        check_bad_name("dir/", "it does not start with ftp_dpm_");
        check_bad_name(
            "ftp_DPM_21_1234567890.sync",
            "it does not start with ftp_dpm_",
        );
        check_bad_name(
            "ftp_dpm_21_1234567890",
            "no .sync or .overwrite after the numbers",
        );
        check_bad_name(
            "ftp_dpm_21_1234567890.gz",
            "no .sync or .overwrite after the numbers",
        );
        check_bad_name(
            "ftp_dpm_21_1234567890.SYNC",
            "no .sync or .overwrite after the numbers",
        );
        check_bad_name(
            "ftp_dpm_1234567890.sync",
            "expected 2 or 3 numbers separated by _",
        );
        check_bad_name(
            "ftp_dpm_1_2_3_1234567890.sync",
            "expected 2 or 3 numbers separated by _",
        );
        check_bad_name(
            "ftp_dpm_x_1234567890.sync",
            "DPID \"x\" is not a number below 2^32",
        );
        check_bad_name(
            "ftp_dpm_+21_1234567890.sync",
            "DPID \"+21\" is not a number below 2^32",
        );
        check_bad_name(
            "ftp_dpm_4294967296_1234567890.sync",
            "DPID \"4294967296\" is not a number below 2^32",
        );
        check_bad_name(
            "ftp_dpm_21__1234567890.sync",
            "target DPID \"\" is not a number below 2^32",
        );
        check_bad_name(
            "ftp_dpm_21_123456789.sync",
            "the unix time \"123456789\" is not 10 digits",
        );
        check_bad_name(
            "ftp_dpm_21_12345678901.sync",
            "the unix time \"12345678901\" is not 10 digits",
        );
        check_bad_name(
            "ftp_dpm_21_12345678x0.sync",
            "the unix time \"12345678x0\" is not 10 digits",
        );
        check_bad_name(
            "ftp_dpm_21_1234567890.sync.x",
            "split number \"x\" is not a number below 2^32",
        );
        check_bad_name(
            "ftp_dpm_21_1234567890.sync.",
            "split number \"\" is not a number below 2^32",
        );
        check_bad_name(
            "ftp_dpm_21_1234567890.sync.gz.1",
            "unexpected \".1\" at the end",
        );
        check_bad_name(
            "ftp_dpm_21_1234567890.sync.1.2",
            "unexpected \".2\" at the end",
        );
        check_bad_name(
            "ftp_dpm_21_1234567890.sync.gz.txt",
            "unexpected \".txt\" at the end",
        );
        let long = format!("ftp_dpm_21_1234567890.sync.{}", "x".repeat(10_000));
        assert!(render_name(&long).len() < 400);
        // Found by fuzzing: escaped control characters made a message ten times as long.
        let controls = format!("ftp_dpm_20914_21_1234{}567890.sync", "\u{1}".repeat(80));
        let message = render_name(&controls);
        assert!(message.len() < 400, "{} bytes: {message}", message.len());
        assert!(
            message.contains("(the unix time \"1234\\u{1}\\u{1}"),
            "{message}"
        );
    }

    #[test]
    fn data_source_and_id_source() {
        let f = parse_file_name("ftp_dpm_20914_21_1234567890.sync").unwrap();
        assert_eq!((f.id_source(), f.data_source()), (20914, 21));
        let f = parse_file_name("ftp_dpm_21_1234567890.sync").unwrap();
        assert_eq!((f.id_source(), f.data_source()), (21, 21));
    }

    fn file(overwrite: bool) -> FileName {
        FileName {
            dpid: 20914,
            target_dpid: Some(21),
            overwrite,
            split: None,
            gzip: false,
            timestamp: 1_234_567_890,
        }
    }

    fn render_line(line: &[u8], overwrite: bool) -> String {
        match parse_line(line, &file(overwrite)) {
            Ok(None) => "blank".into(),
            Ok(Some(op)) => {
                let signals: Vec<String> =
                    op.signals.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(
                    "{} +{:?} -{:?} {:?}",
                    op.identities[0].value, op.trait_ids, op.remove_trait_ids, signals
                )
            }
            Err(e) => e.message,
        }
    }

    fn check(line: &str, expected: &str) {
        assert_eq!(
            render_line(line.as_bytes(), false),
            expected,
            "line {line:?}"
        );
    }

    fn check_overwrite(line: &str, expected: &str) {
        assert_eq!(
            render_line(line.as_bytes(), true),
            expected,
            "line {line:?}"
        );
    }

    #[test]
    fn the_op_of_a_line() {
        let op = parse_line(b"u1\td_sid=5", &file(false)).unwrap().unwrap();
        assert_eq!(
            op.identities,
            [Identity {
                source: SourceName::DataSource(20914),
                value: "u1".into()
            }]
        );
        assert_eq!(op.target_data_sources, [21]);
        assert_eq!(op.kind, OpKind::Append);
        let op = parse_line(b"u1\td_sid=5", &file(true)).unwrap().unwrap();
        assert_eq!(op.kind, OpKind::Overwrite);
    }

    #[test]
    fn items() {
        check("u\td_sid=24,d_sid=26", "u +[24, 26] -[] []");
        check("u\td_unsid=24", "u +[] -[24] []");
        check("u\t24:1,25:0,26:-1", "u +[24] -[25, 26] []");
        check("u\tic=abc,30608", "u +[] -[] [\"ic=abc\", \"ic=30608\"]");
        check("u\tgender=m,age=32", "u +[] -[] [\"gender=m\", \"age=32\"]");
        check(
            "u\t\"gender\"=\"m\",\"d_sid\"=\"7\",d_sid=\"8\"",
            "u +[7, 8] -[] [\"gender=m\"]",
        );
        // Quotes hold commas, tabs and `=`; a quoted bare item is an integration code.
        check(
            "u\t\"a,b\"=\"c=d,e\",\"x,y\",\"p\"=",
            "u +[] -[] [\"a,b=c=d,e\", \"ic=x,y\", \"p=\"]",
        );
        check("u\ta=b=c", "u +[] -[] [\"a=b=c\"]");
        check("u\t\"a=b\"", "u +[] -[] [\"ic=a=b\"]");
        // Colons not followed by a trait state belong to the code.
        check(
            "u\tvendor:seg,a:2,\"5:0\"",
            "u +[] -[] [\"ic=vendor:seg\", \"ic=a:2\", \"ic=5:0\"]",
        );
        check("u\tk=é,ü", "u +[] -[] [\"k=é\", \"ic=ü\"]");
        check("u\ta=", "u +[] -[] [\"a=\"]");
        check("user 1\tk=two words", "user 1 +[] -[] [\"k=two words\"]");
    }

    #[test]
    fn separators_and_whitespace() {
        check("u\td_sid=1\td_sid=2", "u +[1, 2] -[] []");
        check("u\td_sid=1,\td_sid=2\t\t3", "u +[1, 2] -[] [\"ic=3\"]");
        check("u\td_sid=1 , d_sid=2", "u +[1, 2] -[] []");
        check("u\td_sid=1\t,d_sid=2", "u +[1, 2] -[] []");
        check("u\td_sid=1,", "u +[1] -[] []");
        check("u\td_sid=1, \t ", "u +[1] -[] []");
        check("u\td_sid=1\r", "u +[1] -[] []");
        check("", "blank");
        check(" \t \r", "blank");
    }

    #[test]
    fn overwrite_ignores_removals() {
        check_overwrite(
            "u\td_sid=1,d_unsid=2,3:0,4:-1,5:1,ic=x",
            "u +[1, 5] -[] [\"ic=x\"]",
        );
        // Checked all the same.
        check_overwrite("u\td_unsid=x", "item 1 \"d_unsid=x\": not a trait id");
        // Ignored removals do not count towards the limit.
        let line = format!("u\t{}d_sid=9", "1:0,".repeat(MAX_TRAIT_IDS + 5));
        assert_eq!(render_line(line.as_bytes(), true), "u +[9] -[] []");
    }

    #[test]
    fn line_errors() {
        check(
            "u",
            "no tab after the user id (a line is <user id><TAB><items>)",
        );
        check(
            "u d_sid=1",
            "no tab after the user id (a line is <user id><TAB><items>)",
        );
        check("u\t", "no items after the user id");
        check("u\t ,", "item 1: empty (nothing before the first comma)");
        check("\td_sid=1", "empty user id");
        check(" u\td_sid=1", "user id \" u\" starts or ends with a space");
        check("u \td_sid=1", "user id \"u \" starts or ends with a space");
        check(
            "u\u{1}\td_sid=1",
            "user id \"u\\u{1}\" has a control character",
        );
        check(
            &format!("{}\td_sid=1", "u".repeat(257)),
            &format!(
                "user id \"{}…\" is longer than 256 bytes (257)",
                "u".repeat(SHOWN_BYTES)
            ),
        );
        assert_eq!(
            render_line(b"u\td_sid=1,\xff", false),
            "invalid UTF-8 at byte 10"
        );
        check("u\ta,,b", "item 2: empty (nothing between two commas)");
        check("u\ta, ,b", "item 2: empty (nothing between two commas)");
        check("u\ta\tb,\t,c", "item 3: empty (nothing between two commas)");
        check("u\t,a", "item 1: empty (nothing before the first comma)");
        check("u\ta,\"b,c", "item 2 \"\\\"b,c\": unterminated quote");
        check(
            "u\ta\t\"b\"\"",
            "item 2 \"\\\"b\\\"\\\"\": unterminated quote",
        );
        check("u\ta,b,d_sid=abc", "item 3 \"d_sid=abc\": not a trait id");
        check("u\td_sid=", "item 1 \"d_sid=\": not a trait id");
        check("u\td_sid=-1", "item 1 \"d_sid=-1\": not a trait id");
        check("u\td_sid=+1", "item 1 \"d_sid=+1\": not a trait id");
        check("u\td_sid=0", "item 1 \"d_sid=0\": trait ids start at 1");
        check("u\t0:1", "item 1 \"0:1\": trait ids start at 1");
        check("u\tabc:0", "item 1 \"abc:0\": not a trait id");
        check(
            "u\td_sid=18446744073709551616",
            "item 1 \"d_sid=18446744073709551616\": not a trait id (too large)",
        );
        check("u\t=v", "item 1 \"=v\": empty key");
        check("u\t\"\"=v", "item 1 \"\\\"\\\"=v\": empty key");
        check("u\tic=", "item 1 \"ic=\": empty integration code");
        check("u\t\"\"", "item 1 \"\\\"\\\"\": empty integration code");
        check(
            "u\ta\"b\"=c",
            "item 1 \"a\\\"b\\\"=c\": a quote inside unquoted text (quotes enclose a whole key \
             or value)",
        );
        check(
            "u\t\"a\"b=c",
            "item 1 \"\\\"a\\\"b=c\": text after a closing quote (quotes enclose a whole key \
             or value)",
        );
        check(
            "u\tk=\"a\tb\"",
            "item 1 \"k=\\\"a\\tb\\\"\": control character in the value",
        );
        check(
            &format!("u\tk={}", "v".repeat(257)),
            &format!(
                "item 1 \"k={}…\": value longer than 256 bytes",
                "v".repeat(SHOWN_BYTES - 2)
            ),
        );
        check(
            &format!("u\t{}=v", "k".repeat(257)),
            &format!(
                "item 1 \"{}…\": key longer than 256 bytes",
                "k".repeat(SHOWN_BYTES)
            ),
        );
    }

    #[test]
    fn limits_per_line() {
        let ok = format!("u\t{}", "d_sid=1,3:0,".repeat(MAX_TRAIT_IDS / 2));
        let op = parse_line(ok.as_bytes(), &file(false)).unwrap().unwrap();
        assert_eq!(
            op.trait_ids.len() + op.remove_trait_ids.len(),
            MAX_TRAIT_IDS
        );
        check(
            &format!("{ok}7:-1"),
            &format!(
                "item {} \"7:-1\": more than 1000 trait ids on one line",
                MAX_TRAIT_IDS + 1
            ),
        );
        let ok = format!("u\t{}", "k=v,".repeat(MAX_SIGNALS));
        let op = parse_line(ok.as_bytes(), &file(false)).unwrap().unwrap();
        assert_eq!(op.signals.len(), MAX_SIGNALS);
        check(
            &format!("{ok}x"),
            &format!(
                "item {} \"x\": more than 1000 signals on one line",
                MAX_SIGNALS + 1
            ),
        );
    }

    /// What [`Lines`] gives for `input`, read through a buffer of `capacity` bytes.
    fn read(input: &[u8], capacity: usize) -> Vec<String> {
        let lines = Lines::new(io::BufReader::with_capacity(capacity, input));
        lines
            .map(|r| match r {
                Ok(line) => format!("{}: {}", line.number, String::from_utf8_lossy(&line.bytes)),
                Err(e) => e.to_string(),
            })
            .collect()
    }

    fn check_read(input: &[u8], expected: &[&str]) {
        for capacity in [1, 3, 8192] {
            assert_eq!(read(input, capacity), expected, "{capacity}-byte chunks");
        }
    }

    #[test]
    fn reading_lines() {
        check_read(b"", &[]);
        check_read(b"a\tb\nc\td\n", &["1: a\tb", "2: c\td"]);
        check_read(b"a\tb\r\nc\td\r\n", &["1: a\tb", "2: c\td"]);
        check_read(b"a\tb\nc\td", &["1: a\tb", "2: c\td"]);
        check_read(b"a\n\n\r\nb", &["1: a", "2: ", "3: ", "4: b"]);
        check_read(b"\n", &["1: "]);
        check_read(b"a\r\r\n", &["1: a\r"]);
        check_read(
            b"\xEF\xBB\xBFa\tb\n\xEF\xBB\xBFc",
            &["1: a\tb", "2: \u{FEFF}c"],
        );
    }

    #[test]
    fn a_long_line_is_skipped_without_being_held() {
        let mut input = b"a\tb\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 300_000));
        input.extend(b"\nc\td\n");
        let expected = ["1: a\tb", "line 2: longer than 102400 bytes", "3: c\td"];
        check_read(&input, &expected);

        let mut lines = Lines::new(io::BufReader::with_capacity(4096, &input[..]));
        while let Some(r) = lines.next_line() {
            if let Ok(line) = r {
                assert!(line.bytes.len() <= MAX_LINE_BYTES);
            }
        }
        assert!(lines.line.bytes.capacity() <= 2 * (MAX_LINE_BYTES + 1));

        // At the end of the input too.
        let mut input = b"a\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
        check_read(&input, &["1: a", "line 2: longer than 102400 bytes"]);
    }

    #[test]
    fn the_longest_line() {
        let longest = vec![b'x'; MAX_LINE_BYTES];
        for end in [&b"\n"[..], b"\r\n", b""] {
            let input = [&longest[..], end].concat();
            let got: Vec<_> = Lines::new(&input[..]).collect();
            assert!(
                matches!(&got[..], [Ok(l)] if l.bytes.len() == MAX_LINE_BYTES),
                "{end:?}"
            );
        }
        let input = [&longest[..], b"x\r\n"].concat();
        check_read(&input, &["line 1: longer than 102400 bytes"]);
    }

    /// Gives `data`, then fails (or is interrupted once, then goes on).
    struct Failing<'a> {
        data: &'a [u8],
        kind: io::ErrorKind,
    }

    impl io::Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                if self.kind == io::ErrorKind::Interrupted {
                    self.kind = io::ErrorKind::Other;
                    return Err(io::ErrorKind::Interrupted.into());
                }
                if self.kind == io::ErrorKind::Other {
                    return Ok(0);
                }
                return Err(io::Error::new(self.kind, "corrupt deflate stream"));
            }
            let n = buf.len().min(self.data.len()).min(3);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_ends_the_lines() {
        let reader = Failing {
            data: b"a\tb\nc\t",
            kind: io::ErrorKind::InvalidData,
        };
        let mut lines = Lines::new(io::BufReader::new(reader));
        assert_eq!(lines.next_line().unwrap().unwrap().bytes, b"a\tb");
        let err = lines.next_line().unwrap().unwrap_err();
        assert!(matches!(err, LineReadError::Io { line: 2, .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "line 2: could not read the file: corrupt deflate stream"
        );
        assert!(lines.next_line().is_none());
        assert!(lines.next_line().is_none());

        let reader = Failing {
            data: b"a\tb\nc",
            kind: io::ErrorKind::Interrupted,
        };
        let got: Vec<Line> = Lines::new(io::BufReader::new(reader))
            .map(Result::unwrap)
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].number, &got[1].bytes[..]), (2, &b"c"[..]));
    }

    #[test]
    fn lines_per_user() {
        let mut limit = PerUserLimit::new();
        let admitted = (0..250).filter(|_| limit.admit("a")).count();
        assert_eq!(admitted, MAX_LINES_PER_USER as usize);
        assert!(limit.admit("b"));
        assert!(limit.admit("b"));
        // A new run of "a": what an unsorted file gets past the limit.
        assert!(limit.admit("a"));
        let mut limit = PerUserLimit::new();
        assert!(limit.admit(""));
        assert!(limit.admit(""));
    }

    proptest::proptest! {
        #[test]
        fn lines_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            for overwrite in [false, true] {
                if let Ok(Some(op)) = parse_line(&bytes, &file(overwrite)) {
                    proptest::prop_assert!(op.signals.len() <= MAX_SIGNALS);
                }
            }
        }

        #[test]
        fn text_lines_never_panic(s in "[a-z0-9\"=,:\t \\-]{0,64}") {
            let _ = parse_line(format!("u\t{s}").as_bytes(), &file(false));
        }

        #[test]
        fn names_never_panic(s in "\\PC{0,64}") {
            let _ = parse_file_name(&s);
        }
    }
}
