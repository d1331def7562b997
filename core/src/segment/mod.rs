//! One writer's file: the byte layout ([`layout`]), the writer, the reader, and the
//! process-wide state around them (fork safety, the fatal-signal handler).
//! `docs/format.md` has the full protocol.

mod bounded;
mod crash_handler;
mod fork;
mod layout;
mod reader;
mod writer;

pub use bounded::MAX_VALUE_DEPTH;
pub(crate) use bounded::{decode_hot, decode_record, decode_value};
pub(crate) use crash_handler::{dying, echo_timeout, note_dying, write_all};
pub use crash_handler::{install_crash_handler, mark_crash, set_crash_echo, FATAL_SIGNALS};
pub use fork::process_id;
pub use layout::{
    is_segment_name, Durability, FORMAT_VERSION, FRAME_HEADER, HEADER_SIZE, MAGIC, MAX_RECORD,
};
pub(crate) use reader::writer_holds_lock;
pub use reader::{
    CrashMark, FrameChunk, HeaderInfo, ReadBatch, SegmentReader, SegmentStatus, READ_WINDOW,
};
pub use writer::{EncodeRecord, SegmentWriter, INITIAL_SIZE};
