//! Magic numbers, versions, fixed sizes and size caps (SPEC.md "Conventions" and "Limits").

/// Format major version written by this crate. A reader refuses a larger major.
pub const FORMAT_MAJOR: u16 = 1;
/// Format minor version written by this crate. Newer minors are readable.
pub const FORMAT_MINOR: u16 = 3;

/// First 8 bytes of every recording, and last 8 bytes of a finished one.
/// The 0x89 byte catches 7-bit transfers, the `\r\n`-free tail keeps it binary-looking.
pub const FILE_MAGIC: [u8; 8] = *b"\x89SGDWLK\n";
/// First 4 bytes of every record header (`SWRC`).
pub const RECORD_MAGIC: [u8; 4] = *b"SWRC";

/// Size of the prologue at offset 0.
pub const PROLOGUE_ENCODED_SIZE_BYTES: usize = 64;
/// Size of a record header.
pub const RECORD_HEADER_ENCODED_SIZE_BYTES: usize = 32;
/// Size of the trailer at the end of a finished file.
pub const TRAILER_ENCODED_SIZE_BYTES: usize = 32;
/// Size of the fixed part of a header record payload.
pub const HEADER_FIXED_ENCODED_SIZE_BYTES: usize = 64;
/// Size of the fixed part of a step record payload.
pub const STEP_FIXED_ENCODED_SIZE_BYTES: usize = 72;
/// Size of one chunk table entry.
pub const CHUNK_ENTRY_ENCODED_SIZE_BYTES: usize = 24;
/// Size of the fixed part of a resume record payload.
pub const RESUME_FIXED_ENCODED_SIZE_BYTES: usize = 16;
/// Size of one index entry.
pub const INDEX_ENTRY_ENCODED_SIZE_BYTES: usize = 40;
/// Size of a footer record payload.
pub const FOOTER_ENCODED_SIZE_BYTES: usize = 64;
/// Records start at multiples of this.
pub const RECORD_ALIGNMENT_BYTES: u64 = 8;

/// `step` field value of records that belong to no step.
pub const NO_STEP: u64 = u64::MAX;

/// Writer version string stored in the prologue (16 bytes, zero padded).
pub const WRITER_VERSION: &str = concat!("sgdwalk ", env!("CARGO_PKG_VERSION"));

// Size caps: every length read from a file is checked against one of these before it decides
// an allocation.
/// Largest state (2^33 elements = 32 GiB of f32).
pub const MAX_STATE_LEN_ELEMENTS: u64 = 1 << 33;
/// Largest chunk (2^24 elements = 64 MiB of f32).
pub const MAX_CHUNK_LEN_ELEMENTS: u32 = 1 << 24;
/// Largest keyframe interval.
pub const MAX_KEYFRAME_INTERVAL: u32 = 1 << 16;
/// Most tensors in a layout.
pub const MAX_LAYOUT_TENSORS: usize = 1 << 20;
/// Longest tensor name.
pub const MAX_TENSOR_NAME_BYTES: usize = 4096;
/// Largest JSON text (layout or metadata or resume descriptor).
pub const MAX_JSON_BYTES: u64 = 64 << 20;
/// Most sample ids in one step.
pub const MAX_SAMPLE_IDS: u64 = 1 << 24;
/// Largest augmentation choice per sample.
pub const MAX_AUGMENTATION_BYTES_PER_SAMPLE: u32 = 1 << 12;
/// Largest record payload (64 GiB).
pub const MAX_PAYLOAD_BYTES: u64 = 64 << 30;
/// Most evaluation entries in one epoch record.
pub const MAX_EVALS: u64 = 1 << 16;
/// Largest attachment (4 GiB).
pub const MAX_ATTACHMENT_BYTES: u64 = 4 << 30;
/// Longest attachment name.
pub const MAX_ATTACHMENT_NAME_BYTES: u32 = 256;
/// Most attachments in one file.
pub const MAX_ATTACHMENTS: usize = 1024;
/// Size of the fixed part of an attachment record payload.
pub const ATTACHMENT_FIXED_ENCODED_SIZE_BYTES: usize = 48;
/// Largest resume buffer (same as a state).
pub const MAX_RESUME_LEN_ELEMENTS: u64 = MAX_STATE_LEN_ELEMENTS;

/// Incompat feature bit 0 (format 1.1): the layout holds tensors of other dtypes than `f32`,
/// packed into 4-byte words (SPEC.md §4.2). Set by the writer iff such a tensor exists.
pub const INCOMPAT_TYPED_LAYOUT: u64 = 1;
/// Incompat feature bit 1 (format 1.2): every STEP record carries an absent mask at payload
/// byte 62, and NaN in a step scalar is a recorded value, not "absent" (SPEC.md §4.3). Set by
/// this writer in every new file. Incompat because 1.0/1.1 readers reject a nonzero byte 62.
pub const INCOMPAT_ABSENT_MASK: u64 = 1 << 1;
/// Incompat feature bit 2 (format 1.3): chunks may be stored as split byte streams (codecs
/// 5–8, SPEC.md §5.2). Set by the writer iff its codec settings ask for them; a reopened file
/// keeps its codecs.
pub const INCOMPAT_SPLIT_STREAMS: u64 = 1 << 2;
/// Incompat feature bits this version understands.
pub const KNOWN_INCOMPAT_FLAGS: u64 =
    INCOMPAT_TYPED_LAYOUT | INCOMPAT_ABSENT_MASK | INCOMPAT_SPLIT_STREAMS;
/// Read-only-compatible feature bits this version understands.
pub const KNOWN_RO_COMPAT_FLAGS: u64 = 0;

/// The largest raw/stored ratio a zstd frame can reach (a 128 KiB RLE block costs 4 bytes).
/// Readers reject records that claim more, so a small file cannot demand a huge allocation.
pub const MAX_EXPANSION_RATIO: u64 = 32_768;

/// Whether `raw_bytes` could have been stored in `stored_bytes`.
pub(crate) fn plausible_expansion(stored_bytes: u64, raw_bytes: u64) -> bool {
    u128::from(stored_bytes) * u128::from(MAX_EXPANSION_RATIO) + 4096 >= u128::from(raw_bytes)
}
