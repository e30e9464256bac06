//! Writes the golden files of `fixtures/v1/`, the corrupt files of `fixtures/bad/` and the
//! valid-but-unusual files of `fixtures/edge/` from the seeded generator in
//! `sgdwalk_format::testkit::synth`, plus README inventories.
//!
//! `cargo run -p sgdwalk-format --example gen_fixtures [-- --out DIR] [--force]`
//!
//! Existing v1 files are kept unless `--force` is given: fixtures of a released version are
//! never regenerated (the golden tests compare today's reader against them).

use std::fmt::Write as _;
use std::path::PathBuf;

use sgdwalk_format::Reader;
use sgdwalk_format::testkit::synth::{
    bad_fixtures, bad_fixtures_v1_1, bad_fixtures_v1_3, edge_fixtures, fixture_specs_v1,
    write_fixture,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let force = args.iter().any(|a| a == "--force");
    let root = match args.iter().position(|a| a == "--out") {
        Some(i) => PathBuf::from(args.get(i + 1).ok_or("--out needs a directory")?),
        None => PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("fixtures"),
    };
    let v1 = root.join("v1");
    let bad = root.join("bad");
    let edge = root.join("edge");
    std::fs::create_dir_all(&v1)?;
    std::fs::create_dir_all(&bad)?;
    std::fs::create_dir_all(&edge)?;

    let mut readme = String::from(
        "# Golden recordings, format v1 (1.0 to 1.3)\n\nWritten by `cargo run -p sgdwalk-format --example gen_fixtures` from the seeded\n\
         generator `sgdwalk_format::testkit::synth::fixture_specs_v1` (states from `synth::sgd_trajectory`, seed\n\
         0x5eed2026). Never regenerate these files: `tests/format_golden.rs` decodes each one and compares it\n\
         with the generator's inputs, and `tests/spec_reader/` decodes them with the independent reader.\n\
         The `typed_attachment*` files are format 1.1 (typed layout, attachments), `absent_scalars.sgdw` is 1.2\n\
         (absent mask), the `split_*` files are 1.3 (split byte streams, asked for explicitly: the writer's\n\
         default stores codecs 0–4); all others are 1.0.\n\n\
         | file | bytes | exercises |\n|---|---:|---|\n",
    );
    for spec in fixture_specs_v1() {
        let path = v1.join(spec.name);
        if path.exists() && !force {
            println!("kept      {}", path.display());
        } else {
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            write_fixture(&spec, &v1)?;
            println!("wrote     {}", path.display());
        }
        let len = std::fs::metadata(&path)?.len();
        writeln!(readme, "| `{}` | {len} | {} |", spec.name, spec.description)?;
    }
    std::fs::write(v1.join("README.md"), readme)?;

    let basic = std::fs::read(v1.join("basic_pred2.sgdw"))?;
    let killed = std::fs::read(v1.join("killed_writer.sgdw"))?;
    let r = Reader::open(&v1.join("basic_pred2.sgdw"))?;
    let delta = r
        .entries()
        .iter()
        .find(|e| e.is_step() && e.chain_start_step != e.step)
        .ok_or("no delta step in basic_pred2.sgdw")?;
    let mut readme = String::from(
        "# Corrupt recordings\n\nDerived from `v1/basic_pred2.sgdw` and `v1/killed_writer.sgdw` by\n\
         `sgdwalk_format::testkit::synth::bad_fixtures`, and from `v1/typed_attachment.sgdw` (format 1.1) by\n\
         `sgdwalk_format::testkit::synth::bad_fixtures_v1_1`, and from `v1/split_streams.sgdw` (format 1.3) by\n\
         `sgdwalk_format::testkit::synth::bad_fixtures_v1_3` (run the `gen_fixtures` example). Each file has a test in\n\
         `tests/format_golden.rs` asserting its exact error; the inventory test fails on an untested file.\n\n\
         | file | bytes | broken how |\n|---|---:|---|\n",
    );
    let typed = std::fs::read(v1.join("typed_attachment.sgdw"))?;
    let mut bad_files = bad_fixtures(&basic, &killed, delta.record_offset as usize)?;
    bad_files.extend(bad_fixtures_v1_1(&typed)?);
    bad_files.extend(bad_fixtures_v1_3(&std::fs::read(
        v1.join("split_streams.sgdw"),
    )?)?);
    for b in bad_files {
        std::fs::write(bad.join(b.name), &b.bytes)?;
        writeln!(
            readme,
            "| `{}` | {} | {} |",
            b.name,
            b.bytes.len(),
            b.description
        )?;
        println!("wrote     {}", bad.join(b.name).display());
    }
    std::fs::write(bad.join("README.md"), readme)?;

    let mut readme = String::from(
        "# Valid but unusual recordings\n\nDerived from `v1/basic_pred2.sgdw` by\n\
         `sgdwalk_format::testkit::synth::edge_fixtures` (run the `gen_fixtures` example): bytes the reference\n\
         writer never produces but every reader must accept (SPEC.md §4.1, §4.3). Each holds exactly the\n\
         steps, states, ids, augmentation, scalars, epoch and resume records of `basic_pred2.sgdw`;\n\
         `tests/format_golden.rs`, `tests/spec_reader/` and the workspace's `tests/interop.rs` (Python) check that.\n\n\
         | file | bytes | unusual how |\n|---|---:|---|\n",
    );
    for e in edge_fixtures(&basic)? {
        std::fs::write(edge.join(e.name), &e.bytes)?;
        writeln!(
            readme,
            "| `{}` | {} | {} |",
            e.name,
            e.bytes.len(),
            e.description
        )?;
        println!("wrote     {}", edge.join(e.name).display());
    }
    std::fs::write(edge.join("README.md"), readme)?;
    Ok(())
}
