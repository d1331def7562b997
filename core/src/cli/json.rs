//! JSON as the commands write it: an object one key a line and one list item a line, its
//! lists produced item by item (grep-friendly, and any JSON parser reads it).

use std::io::{self, Write};

use serde_json::Value as Json;

use crate::aggregate::{TestJson, TestView};

/// One value of a JSON document, or a list written item by item.
pub(crate) enum Part<'a> {
    One(Json),
    Many(Box<dyn Iterator<Item = Json> + 'a>),
    /// Tests, each written straight from its view (`TestView::to_json`'s object).
    Tests(Box<dyn Iterator<Item = &'a TestView> + 'a>),
}

pub(crate) fn write_value(out: &mut dyn Write, value: &Json) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// Writes an object whose lists are produced one item at a time: a run of 100k tests never
/// exists as one JSON tree. Layout: one key a line, one list item a line (grep-friendly,
/// and any JSON parser reads it).
pub(crate) fn write_doc(out: &mut dyn Write, parts: Vec<(&str, Part<'_>)>) -> io::Result<()> {
    let json_err = io::Error::from;
    out.write_all(b"{")?;
    for (i, (key, part)) in parts.into_iter().enumerate() {
        out.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
        serde_json::to_writer(&mut *out, key).map_err(json_err)?;
        out.write_all(b": ")?;
        match part {
            Part::One(v) => serde_json::to_writer(&mut *out, &v).map_err(json_err)?,
            Part::Many(items) => {
                out.write_all(b"[")?;
                let mut empty = true;
                for item in items {
                    out.write_all(if empty { b"\n    " } else { b",\n    " })?;
                    serde_json::to_writer(&mut *out, &item).map_err(json_err)?;
                    empty = false;
                }
                out.write_all(if empty { b"]" } else { b"\n  ]" })?;
            }
            Part::Tests(items) => {
                out.write_all(b"[")?;
                let mut empty = true;
                for t in items {
                    out.write_all(if empty { b"\n    " } else { b",\n    " })?;
                    serde_json::to_writer(&mut *out, &TestJson(t)).map_err(json_err)?;
                    empty = false;
                }
                out.write_all(if empty { b"]" } else { b"\n  ]" })?;
            }
        }
    }
    out.write_all(b"\n}\n")?;
    Ok(())
}
