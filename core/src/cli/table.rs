//! Terminal tables: columns aligned to fit a width, notes under a row, colour (a `Style`
//! painted only when asked for).

use std::borrow::Cow;
use std::io::{self, Write};

use super::text::{clean, shorten_middle, width, wrap};

/// The width of tables when neither `COLUMNS` nor a terminal tells it (output to a pipe).
pub const DEFAULT_WIDTH: usize = 100;

/// Narrower terminals still get tables this wide (a shortened column needs room).
pub const MIN_WIDTH: usize = 40;

/// A shortened column keeps at least this many characters.
const MIN_FLEX: usize = 16;

const GAP: &str = "  ";

/// A colour or weight for a piece of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bold,
    Dim,
    Red,
    BoldRed,
    Green,
    Yellow,
    Magenta,
    Cyan,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Bold => "1",
            Style::Dim => "2",
            Style::Red => "31",
            Style::BoldRed => "1;31",
            Style::Green => "32",
            Style::Yellow => "33",
            Style::Magenta => "35",
            Style::Cyan => "36",
        }
    }

    /// The style of a test outcome.
    pub fn of_outcome(outcome: &str) -> Option<Style> {
        match outcome {
            "passed" => Some(Style::Green),
            "failed" | "error" => Some(Style::Red),
            "crashed" | "timeout" => Some(Style::BoldRed),
            "skipped" => Some(Style::Yellow),
            "running" => Some(Style::Cyan),
            "unfinished" => Some(Style::Magenta),
            _ => None,
        }
    }
}

/// Applies styles, or does nothing when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Painter {
    pub enabled: bool,
}

impl Painter {
    pub fn paint(self, text: &str, style: Option<Style>) -> Cow<'_, str> {
        match style {
            Some(st) if self.enabled && !text.is_empty() => {
                Cow::Owned(format!("\x1b[{}m{text}\x1b[0m", st.code()))
            }
            _ => Cow::Borrowed(text),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One column: its header, alignment, and whether it may be shortened to fit.
#[derive(Debug, Clone)]
pub struct Column {
    pub header: &'static str,
    pub align: Align,
    pub shrink: bool,
    /// Shortened before any other shrinking column (detail, where the others are names a
    /// reader copies).
    pub first: bool,
}

impl Column {
    pub fn left(header: &'static str) -> Column {
        Column {
            header,
            align: Align::Left,
            shrink: false,
            first: false,
        }
    }

    pub fn right(header: &'static str) -> Column {
        Column {
            header,
            align: Align::Right,
            shrink: false,
            first: false,
        }
    }

    /// A left-aligned column that is shortened in the middle when the table is too wide.
    pub fn shrinking(header: &'static str) -> Column {
        Column {
            header,
            align: Align::Left,
            shrink: true,
            first: false,
        }
    }

    /// A [`Column::shrinking`] one that gives way before the others do.
    pub fn shrinking_first(header: &'static str) -> Column {
        Column {
            first: true,
            ..Column::shrinking(header)
        }
    }
}

/// A cell: cleaned text and an optional style.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    style: Option<Style>,
}

impl Cell {
    pub fn new(text: impl AsRef<str>) -> Cell {
        Cell {
            text: clean(text.as_ref()).into_owned(),
            style: None,
        }
    }

    pub fn styled(text: impl AsRef<str>, style: Option<Style>) -> Cell {
        Cell {
            style,
            ..Cell::new(text)
        }
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::new(s)
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::new(s)
    }
}

/// Rows under a header line, each column as wide as its widest cell; shrinking columns
/// give way (widest first) until the table fits the width.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<Cell>>,
    /// Lines printed under row `i`, indented: sentences wrap at the width (never lose their
    /// end), code lines (`Note::Code`) are cut at the end only when the table must fit.
    notes: Vec<Vec<Note>>,
}

/// A line of detail under a row.
#[derive(Debug, Clone)]
pub enum Note {
    /// Prose: wrapped at spaces to the width.
    Text(String),
    /// A line of a traceback: kept whole, indented as it was, its middle cut if too wide.
    Code(String),
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Table {
        Table {
            columns,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
        self.notes.push(Vec::new());
    }

    /// A row with lines of detail under it.
    pub fn push_with_notes(&mut self, row: Vec<Cell>, notes: Vec<Note>) {
        self.push(row);
        if let Some(last) = self.notes.last_mut() {
            *last = notes
                .into_iter()
                .map(|n| match n {
                    Note::Text(t) => Note::Text(clean(&t).into_owned()),
                    Note::Code(t) => Note::Code(clean(&t).into_owned()),
                })
                .collect();
        }
    }

    /// Column widths for a table no wider than `max` (including the `indent`).
    fn widths(&self, max: Option<usize>, indent: usize) -> Vec<usize> {
        let mut w: Vec<usize> = self.columns.iter().map(|c| width(c.header)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                w[i] = w[i].max(width(&cell.text));
            }
        }
        let Some(max) = max else { return w };
        let total =
            |w: &[usize]| indent + w.iter().sum::<usize>() + GAP.len() * w.len().saturating_sub(1);
        let mut over = total(&w).saturating_sub(max);
        // Columns that give way first, down to the minimum.
        for (i, c) in self.columns.iter().enumerate() {
            if c.shrink && c.first && w[i] > MIN_FLEX {
                let cut = (w[i] - MIN_FLEX).min(over);
                w[i] -= cut;
                over -= cut;
            }
        }
        while over > 0 {
            // The widest shrinking column above the minimum gives way, down to the next one.
            let mut order: Vec<usize> = (0..w.len())
                .filter(|&i| self.columns[i].shrink && w[i] > MIN_FLEX)
                .collect();
            if order.is_empty() {
                break;
            }
            order.sort_by_key(|&i| std::cmp::Reverse(w[i]));
            let top = order[0];
            let next = order.get(1).map_or(MIN_FLEX, |&i| w[i]).max(MIN_FLEX);
            let cut = (w[top] - next).max(1).min(over).min(w[top] - MIN_FLEX);
            w[top] -= cut;
            over -= cut;
        }
        w
    }

    /// Writes the header and the rows, each line at most `max` columns wide when the
    /// shrinking columns allow it; `None` (`--wide`) cuts nothing.
    pub fn write(
        &self,
        out: &mut dyn Write,
        max: Option<usize>,
        indent: usize,
        paint: Painter,
    ) -> io::Result<()> {
        let widths = self.widths(max, indent);
        let pad = " ".repeat(indent);
        let last = self.columns.len().saturating_sub(1);
        let mut line = String::new();
        let mut emit = |cells: &mut dyn Iterator<Item = (String, Option<Style>)>,
                        out: &mut dyn Write|
         -> io::Result<()> {
            line.clear();
            line.push_str(&pad);
            for (i, (text, style)) in cells.enumerate() {
                let col = &self.columns[i];
                let text = if col.shrink {
                    shorten_middle(&text, widths[i])
                } else {
                    Cow::Borrowed(text.as_str())
                };
                let fill = widths[i].saturating_sub(width(&text));
                if i > 0 {
                    line.push_str(GAP);
                }
                if col.align == Align::Right {
                    line.extend(std::iter::repeat_n(' ', fill));
                }
                line.push_str(&paint.paint(&text, style));
                if col.align == Align::Left && i != last {
                    line.extend(std::iter::repeat_n(' ', fill));
                }
            }
            let trimmed = line.trim_end();
            out.write_all(trimmed.as_bytes())?;
            out.write_all(b"\n")
        };
        let mut header = self
            .columns
            .iter()
            .map(|c| (c.header.to_owned(), Some(Style::Dim)));
        emit(&mut header, out)?;
        for (row, notes) in self.rows.iter().zip(&self.notes) {
            let mut cells = row.iter().map(|c| (c.text.clone(), c.style));
            emit(&mut cells, out)?;
            write_notes(out, notes, max, indent + 4, paint)?;
        }
        Ok(())
    }
}

/// Lines of detail at `inset` columns: prose wrapped to the width, code cut in its middle.
pub fn write_notes(
    out: &mut dyn Write,
    notes: &[Note],
    max: Option<usize>,
    inset: usize,
    paint: Painter,
) -> io::Result<()> {
    let room = max.map(|m| m.saturating_sub(inset).max(MIN_FLEX));
    let pad = " ".repeat(inset);
    for note in notes {
        let lines: Vec<String> = match (note, room) {
            (Note::Text(t), Some(room)) => wrap(t, room),
            (Note::Code(t), Some(room)) => vec![shorten_middle(t, room).into_owned()],
            (Note::Text(t) | Note::Code(t), None) => vec![t.clone()],
        };
        for l in lines {
            writeln!(out, "{pad}{}", paint.paint(&l, Some(Style::Dim)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_the_width_and_align() {
        let mut t = Table::new(vec![
            Column::right("DURATION"),
            Column::left("OUTCOME"),
            Column::shrinking("TEST"),
        ]);
        t.push(vec![
            Cell::new("1.24s"),
            Cell::styled("passed", Some(Style::Green)),
            Cell::new("x".repeat(300)),
        ]);
        t.push(vec![
            Cell::new("850µs"),
            Cell::new("failed"),
            Cell::new("t.py::short"),
        ]);
        let mut out = Vec::new();
        t.write(&mut out, Some(100), 2, Painter { enabled: false })
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| width(l) <= 100), "{text}");
        assert_eq!(lines[0], "  DURATION  OUTCOME  TEST");
        assert_eq!(lines[2], "     850µs  failed   t.py::short");
        assert!(lines[1].contains('…'));
        let mut colored = Vec::new();
        t.write(&mut colored, Some(100), 0, Painter { enabled: true })
            .unwrap();
        assert!(String::from_utf8(colored)
            .unwrap()
            .contains("\x1b[32mpassed\x1b[0m"));
    }
}
