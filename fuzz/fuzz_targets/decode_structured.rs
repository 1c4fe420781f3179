//! Fuzz bytes spliced into a valid version-1 envelope, to get past the JSON
//! syntax and exercise the field checks, timestamps, event types and data.
//!
//! Input: byte 0 picks the event type; the rest is split on 0xFE into
//! edits. An edit's first byte picks a field (low 5 bits) and what to do
//! with it (high 3 bits); the remaining bytes are the new material.
#![no_main]

use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 5] = [
    "case.received",
    "case.resolved",
    "case.withdrawn",
    "case.rated",
    "document.signed",
];

fn template(
    kind: usize,
) -> (
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
) {
    let f = |k: &str, v: &str| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()));
    let envelope = vec![
        f("event_id", r#""0b6f3c1e-2f4e-4f7e-9a51-6f1d2b8e7c11""#),
        f("event_type", &format!("\"{}\"", TYPES[kind])),
        f("schema_version", "1"),
        f("occurred_at", r#""2023-03-30T10:44:00+07:00""#),
        f("commune_code", r#""31471""#),
        f("case_id", r#""000.00.31.H37-230330-0001""#),
    ];
    let data = match kind {
        0 => vec![
            f("procedure_code", r#""1.001234""#),
            f("channel", r#""online""#),
            f("online_level", r#""full""#),
            f("due_at", r#""2023-04-04T17:00:00+07:00""#),
            f("registered_electronically", "true"),
            f("digitized", "false"),
        ],
        1 => vec![
            f("due_at", r#""2023-04-04T17:00:00Z""#),
            f("outcome", r#""completed""#),
        ],
        2 => vec![],
        3 => vec![f("rating", r#""very_satisfied""#), f("score", "17")],
        _ => vec![
            f("document_id", r#""12/QĐ-UBND""#),
            f("signature", r#""digital""#),
            f("document_kind", r#""case_result""#),
        ],
    };
    (envelope, data)
}

fn render(fields: &[(Vec<u8>, Option<Vec<u8>>)], data: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = b"{".to_vec();
    let mut first = true;
    let mut push = |out: &mut Vec<u8>, k: &[u8], v: &[u8]| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(k);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(v);
    };
    for (k, v) in fields {
        if let Some(v) = v {
            push(&mut out, k, v);
        }
    }
    if let Some(d) = data {
        push(&mut out, b"data", &d);
    }
    out.push(b'}');
    out
}

fn quoted(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![b'"'];
    v.extend_from_slice(bytes);
    v.push(b'"');
    v
}

fn escaped(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let mut v = vec![b'"'];
    for c in text.chars() {
        match c {
            '"' => v.extend_from_slice(b"\\\""),
            '\\' => v.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                v.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => v.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    v.push(b'"');
    v
}

fuzz_target!(|input: &[u8]| {
    let Some((&kind, rest)) = input.split_first() else {
        return;
    };
    let (mut envelope, mut data) = template(kind as usize % TYPES.len());
    // The `data` object itself, replaced whole when an edit says so.
    let mut data_raw: Option<Option<Vec<u8>>> = None;
    for edit in rest.split(|b| *b == 0xFE) {
        let Some((&op, material)) = edit.split_first() else {
            continue;
        };
        let n_env = envelope.len();
        let n_data = data.len();
        // One index past the fields: the `data` object; two past: a new field.
        let which = (op & 0x1F) as usize % (n_env + n_data + 2);
        let mode = op >> 5;
        if which == n_env + n_data {
            data_raw = Some(match mode {
                0 => Some(material.to_vec()),
                1 => None,
                2 => Some(b"null".to_vec()),
                _ => Some(quoted(material)),
            });
            continue;
        }
        if which == n_env + n_data + 1 {
            // A new field, in the envelope or in data: key and raw value
            // split on the first ':'.
            let (k, v) = match material.iter().position(|b| *b == b':') {
                Some(i) => (material[..i].to_vec(), material[i + 1..].to_vec()),
                None => (material.to_vec(), b"1".to_vec()),
            };
            let target = if mode & 1 == 0 {
                &mut envelope
            } else {
                &mut data
            };
            target.push((k, Some(v)));
            continue;
        }
        let field = if which < n_env {
            &mut envelope[which]
        } else {
            &mut data[which - n_env]
        };
        match mode {
            // Raw bytes between the quotes.
            0 => field.1 = Some(quoted(material)),
            // Raw bytes as the JSON value.
            1 => field.1 = Some(material.to_vec()),
            // A properly escaped string.
            2 => field.1 = Some(escaped(material)),
            // Removed.
            3 => field.1 = None,
            // Appended inside the string (e.g. after a timestamp).
            4 => {
                if let Some(v) = &mut field.1 {
                    if v.last() == Some(&b'"') {
                        v.pop();
                        v.extend_from_slice(material);
                        v.push(b'"');
                    } else {
                        v.extend_from_slice(material);
                    }
                }
            }
            // Overwrites a prefix of the value's characters (inside quotes).
            5 => {
                if let Some(v) = &mut field.1 {
                    let start = usize::from(v.first() == Some(&b'"'));
                    for (i, b) in material.iter().enumerate() {
                        let at = start + i;
                        if at + start >= v.len() {
                            break;
                        }
                        v[at] = *b;
                    }
                }
            }
            // A number made from the material.
            6 => {
                let mut n = [0u8; 8];
                for (i, b) in material.iter().take(8).enumerate() {
                    n[i] = *b;
                }
                let n = i64::from_le_bytes(n);
                let text = match material.len() % 3 {
                    0 => n.to_string(),
                    1 => (n % 40).to_string(),
                    _ => format!("{}.5e{}", n % 100, n % 400),
                };
                field.1 = Some(text.into_bytes());
            }
            // The key itself replaced.
            _ => field.0 = material.to_vec(),
        }
    }
    let data_value = match data_raw {
        Some(raw) => raw,
        None => Some(render(&data, None)),
    };
    let json = render(&envelope, data_value);
    cchc_pipeline_fuzz::check(&json);
});
