//! Damage to the evidence behind the store's back (segment files and the
//! manifest, FORMAT.md sections 15 and 16) is found by `verify` at the
//! right seq and refused by `Ledger::open`; what was never acknowledged is
//! dropped and nothing else.

use std::path::Path;

use lifeledger::file::ingest_file;
use lifeledger_ledger::verify::{Depth, Finding, Problem};
use lifeledger_ledger::{Ledger, LedgerOptions, Snapshot, StoreError};

use lifeledger_tests::segments::{cut_file, flip_byte, record_spans, segment_files};
use lifeledger_tests::{
    clock, copy_dir, open, open_with_segments, retry_locked, stored, write_lines,
};

const CHAIN: &str = "file";

/// A ledger of `n` events in batches of 100, segments sealed at
/// `segment_bytes`, closed.
fn build_with(dir: &Path, n: usize, segment_bytes: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..n)
        .map(|i| stored(&format!("e{i}"), "i", "mysql"))
        .collect();
    let file = write_lines(tmp.path(), "in.jsonl", &lines);
    let mut ledger = open_with_segments(dir, segment_bytes);
    ingest_file(&mut ledger, CHAIN, &file, 100, clock, |_| {}, |_| Ok(())).unwrap();
}

fn build(dir: &Path, n: usize) {
    build_with(dir, n, 64 << 20);
}

/// What `verify` finds, from the evidence alone.
fn verify(dir: &Path) -> Vec<Finding> {
    Snapshot::open(dir)
        .unwrap()
        .verify(Depth::Events, &mut |_| {})
        .unwrap()
        .findings
}

/// Opening for appends must fail; the error it fails with.
fn open_for_append(dir: &Path) -> StoreError {
    retry_locked(|| match Ledger::open(dir, LedgerOptions::default()) {
        Ok(_) => panic!("a damaged ledger opened for appends"),
        Err(StoreError::Open { source, path }) => Err(StoreError::Open { source, path }),
        Err(other) => Ok(other),
    })
}

fn span(dir: &Path, seq: u64) -> lifeledger_tests::segments::RecordSpan {
    record_spans(dir, CHAIN)
        .into_iter()
        .find(|s| s.seq == seq)
        .unwrap()
}

#[test]
fn a_changed_byte_in_the_middle_is_found_at_its_seq() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 700);
    let s = span(tmp.path(), 333);
    flip_byte(&s.path, s.encoding_offset + 200, 0x20);
    let findings = verify(tmp.path());
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].seq, 333, "{}", findings[0]);
    assert!(
        matches!(&findings[0].problem, Problem::Unreadable(d) if d.contains("acknowledged 700 entries")),
        "{}",
        findings[0]
    );
}

#[test]
fn a_changed_last_entry_stops_the_ledger_from_opening_for_appends() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 300);
    let s = span(tmp.path(), 299);
    flip_byte(&s.path, s.encoding_offset + 60, 0x20);
    assert!(matches!(
        open_for_append(tmp.path()),
        StoreError::TailMismatch { .. }
    ));
    assert_eq!(verify(tmp.path())[0].seq, 299);
}

#[test]
fn a_deleted_sealed_segment_is_found_where_the_gap_starts_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    build_with(tmp.path(), 1000, 16 * 1024);
    let files = segment_files(tmp.path(), CHAIN);
    assert!(files.len() > 3, "{files:?}");
    let victim = &files[files.len() / 2];
    let first: u64 = victim.file_name().unwrap().to_str().unwrap()[..20]
        .parse()
        .unwrap();
    std::fs::remove_file(victim).unwrap();
    let findings = verify(tmp.path());
    assert_eq!(findings[0].seq, first, "{}", findings[0]);
    assert!(
        findings[0].to_string().contains("missing"),
        "{}",
        findings[0]
    );
    assert!(matches!(
        open_for_append(tmp.path()),
        StoreError::Broken { seq, .. } if seq == first
    ));
}

#[test]
fn a_changed_sealed_segment_is_found_even_where_its_frames_check_out() {
    let tmp = tempfile::tempdir().unwrap();
    build_with(tmp.path(), 600, 16 * 1024);
    let files = segment_files(tmp.path(), CHAIN);
    // Append a valid-looking byte to a sealed file: every frame still
    // checks out, but the file is not the one that was sealed.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes.push(0);
    std::fs::write(&files[0], bytes).unwrap();
    let findings = verify(tmp.path());
    assert_eq!(findings[0].seq, 0, "{}", findings[0]);
}

#[test]
fn a_cut_open_segment_is_found_at_the_record_it_cuts_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 300);
    let s = span(tmp.path(), 205);
    cut_file(&s.path, s.encoding_offset + 10);
    let findings = verify(tmp.path());
    assert_eq!(findings[0].seq, 205, "{}", findings[0]);
    assert!(matches!(findings[0].problem, Problem::Unreadable(_)));
    assert!(matches!(
        open_for_append(tmp.path()),
        StoreError::Broken { .. }
    ));
    // Refusing changed nothing: the cut file is as it was.
    assert_eq!(
        std::fs::metadata(&s.path).unwrap().len(),
        s.encoding_offset + 10
    );
}

#[test]
fn any_flipped_acknowledged_byte_is_found_and_nothing_panics() {
    let tmp = tempfile::tempdir().unwrap();
    build_with(tmp.path(), 120, 8 * 1024);
    let clean = tmp.path().join("clean");
    let ledger = tmp.path().join("ledger");
    std::fs::rename(tmp.path().join("segments"), tmp.path().join("s")).unwrap();
    // Keep a pristine copy and damage a fresh copy per offset.
    std::fs::create_dir_all(&clean).unwrap();
    std::fs::rename(tmp.path().join("s"), clean.join("segments")).unwrap();
    std::fs::rename(tmp.path().join("manifest"), clean.join("manifest")).unwrap();
    let files: Vec<_> = segment_files(&clean, CHAIN);
    for (n, file) in files.iter().enumerate() {
        let len = std::fs::metadata(file).unwrap().len();
        for offset in (0..len).step_by(41) {
            let _ = std::fs::remove_dir_all(&ledger);
            copy_dir(&clean, &ledger);
            let target = segment_files(&ledger, CHAIN)[n].clone();
            flip_byte(&target, offset, 0x01);
            let findings = verify(&ledger);
            assert!(
                !findings.is_empty(),
                "flip at byte {offset} of {} passed verify",
                target.display()
            );
        }
    }
    // And the manifest: any flip makes it unreadable, never a shorter ledger.
    let len = std::fs::metadata(clean.join("manifest")).unwrap().len();
    for offset in 0..len {
        let _ = std::fs::remove_dir_all(&ledger);
        copy_dir(&clean, &ledger);
        flip_byte(&ledger.join("manifest"), offset, 0x01);
        assert!(
            matches!(Snapshot::open(&ledger), Err(StoreError::Manifest { .. })),
            "flip at manifest byte {offset} passed"
        );
    }
}

#[test]
fn a_rolled_back_manifest_is_refused_by_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 100);
    let old = std::fs::read(tmp.path().join("manifest")).unwrap();
    build(tmp.path(), 150);
    // An older manifest, intact on its own, put back.
    std::fs::write(tmp.path().join("manifest"), &old).unwrap();
    let err = open_for_append(tmp.path());
    assert!(err.to_string().contains("older than its indexes"), "{err}");
}

#[test]
fn bytes_past_the_acknowledged_end_are_dropped_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 250);
    let spans = record_spans(tmp.path(), CHAIN);
    let open_file = spans.last().unwrap().path.clone();
    let acknowledged = std::fs::metadata(&open_file).unwrap().len();
    // A crash inside the next append: half a frame, and a temporary
    // manifest that never replaced the real one.
    let frame_start = spans.last().unwrap().frame_offset;
    let frame = std::fs::read(&open_file).unwrap()[frame_start as usize..].to_vec();
    let mut torn = std::fs::read(&open_file).unwrap();
    torn.extend_from_slice(&frame[..frame.len() / 2]);
    std::fs::write(&open_file, torn).unwrap();
    std::fs::write(tmp.path().join("manifest.tmp"), b"half a manif").unwrap();
    // Readers stop at the acknowledged end.
    assert!(verify(tmp.path()).is_empty());
    let mut ledger = open(tmp.path());
    assert_eq!(ledger.head(CHAIN).unwrap().next_seq, 250);
    assert_eq!(std::fs::metadata(&open_file).unwrap().len(), acknowledged);
    assert!(!tmp.path().join("manifest.tmp").exists());
    let more = tempfile::tempdir().unwrap();
    let file = write_lines(more.path(), "more.jsonl", &[stored("x1", "i", "mysql")]);
    ingest_file(&mut ledger, CHAIN, &file, 100, clock, |_| {}, |_| Ok(())).unwrap();
    assert_eq!(ledger.head(CHAIN).unwrap().next_seq, 251);
    drop(ledger);
    assert!(verify(tmp.path()).is_empty());
}

#[test]
fn a_directory_that_is_not_a_ledger_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("conf"), b"someone else's").unwrap();
    std::fs::write(tmp.path().join("notes.txt"), b"keep me").unwrap();
    let err = open_for_append(tmp.path());
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert!(matches!(
        Snapshot::open(tmp.path()),
        Err(StoreError::Foreign { .. })
    ));
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["conf", "notes.txt"]);
    assert_eq!(
        std::fs::read(tmp.path().join("conf")).unwrap(),
        b"someone else's"
    );
}

#[test]
fn frame_positions_in_the_index_are_hints_a_wrong_one_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 700);
    {
        let db = lifeledger_tests::open_index(tmp.path());
        let frames: Vec<_> = db.scan_prefix(b"F").keys().map(|k| k.unwrap()).collect();
        assert!(
            frames.len() >= 7,
            "one position per frame: {}",
            frames.len()
        );
        for key in frames {
            // Every hint now points into the middle of the first frame.
            let mut wrong = 0u64.to_be_bytes().to_vec();
            wrong.extend_from_slice(&100u64.to_be_bytes());
            db.insert(key, wrong).unwrap();
        }
        db.flush().unwrap();
    }
    let mut ledger = open(tmp.path());
    let record = ledger.records(CHAIN, 333).unwrap().next().unwrap().unwrap();
    assert_eq!(record.position, 333);
    assert_eq!(
        ledger.find_event("e333").unwrap(),
        Some((CHAIN.to_owned(), 333))
    );
}

#[test]
fn damage_in_a_compressed_frame_is_named_at_the_frame_and_nothing_after_it_is_vouched_for() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..700)
        .map(|i| stored(&format!("e{i}"), "i", "mysql"))
        .collect();
    let file = write_lines(tmp.path(), "in.jsonl", &lines);
    let dir = tmp.path().join("ledger");
    {
        let mut ledger = open(&dir);
        ingest_file(&mut ledger, CHAIN, &file, 100, clock, |_| {}, |_| Ok(())).unwrap();
    }
    let frames = lifeledger_tests::segments::frame_spans(&dir, CHAIN);
    assert!(frames.iter().all(|f| f.codec == 1), "{frames:?}");
    let victim = &frames[3];
    flip_byte(&victim.path, victim.offset + victim.len / 2, 0x01);
    let findings = verify(&dir);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].seq, victim.first_seq, "{}", findings[0]);
    // Compressed, the frames before the damage take far fewer bytes than
    // the entries they hold.
    let stored_bytes: u64 = frames[..3].iter().map(|f| f.len).sum();
    let entry_bytes: usize = Snapshot::open(&dir)
        .unwrap()
        .records(CHAIN, 0)
        .take(victim.first_seq as usize)
        .map(|r| r.unwrap().encoding.len())
        .sum();
    assert!(
        stored_bytes * 2 < entry_bytes as u64,
        "{stored_bytes} bytes stored for {entry_bytes} bytes of entries"
    );
}
