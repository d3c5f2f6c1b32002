use super::*;
use proptest::prelude::*;

fn key(n: u16) -> Vec<u8> {
    format!("i{n:05}").into_bytes()
}

/// A save of `(key number, value)` pairs, as the projection makes one:
/// sorted, one value per key.
fn batch(pairs: &[(u16, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let sorted: BTreeMap<Vec<u8>, Vec<u8>> =
        pairs.iter().map(|(k, v)| (key(*k), v.clone())).collect();
    sorted.into_iter().collect()
}

fn check_against(
    store: &StateStore,
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<(), TestCaseError> {
    let view = store.view();
    for n in 0..300u16 {
        prop_assert_eq!(view.get(&key(n)).unwrap(), model.get(&key(n)).cloned());
    }
    let scanned: Vec<_> = view.scan(b"i").map(Result::unwrap).collect();
    let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    prop_assert_eq!(scanned, expected);
    prop_assert_eq!(store.count(b"i").unwrap(), model.len() as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever saves come, merged or not, reopened or not, in runs of
    /// the current version or of version 1 (an older build's): every key
    /// reads back as its last saved value, and a scan lists each key
    /// once, in order.
    #[test]
    fn saved_states_read_back_as_last_saved(
        saves in proptest::collection::vec(
            proptest::collection::vec((0u16..300, proptest::collection::vec(any::<u8>(), 0..600)), 0..120),
            1..12,
        ),
        reopen_after in 0usize..12,
        in_version_1 in proptest::collection::vec(any::<bool>(), 12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROJECTION_DIR);
        let mut store = StateStore::open_writer(&path).unwrap();
        let mut model = BTreeMap::new();
        for (n, save) in saves.iter().enumerate() {
            let states = batch(save);
            model.extend(states.iter().cloned());
            let cursor = (n as u64).to_be_bytes().to_vec();
            if in_version_1[n] && !states.is_empty() {
                let mut run = store
                    .start_run(states.len() as u64)
                    .unwrap()
                    .in_version(run::RunVersion::V1);
                for (k, v) in &states {
                    run.push(k, v).unwrap();
                }
                store.save_runs(vec![run], [(b"cchain".to_vec(), cursor)]).unwrap();
            } else {
                store.save(&states, [(b"cchain".to_vec(), cursor)]).unwrap();
            }
            if n == reopen_after {
                store = StateStore::open_writer(&path).unwrap();
            }
            check_against(&store, &model)?;
        }
        let reopened = StateStore::open_writer(&path).unwrap();
        check_against(&reopened, &model)?;
        let last = (saves.len() as u64 - 1).to_be_bytes();
        prop_assert_eq!(reopened.small(b"cchain"), Some(&last[..]));
        // Runs stay few: no four in a row are of about one size.
        for group in reopened.view().runs.windows(MERGE_WIDTH) {
            prop_assert!(group[0].length() >= 2 * group[MERGE_WIDTH - 1].length());
        }
        let listed: Vec<_> = std::fs::read_dir(&path).unwrap().collect();
        prop_assert_eq!(listed.len(), reopened.view().runs.len() + 1, "only the manifest and its runs remain");
    }
}

#[test]
fn a_reader_keeps_its_runs_while_the_writer_merges_them_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(PROJECTION_DIR);
    let private = tempfile::tempdir().unwrap();
    let mut writer = StateStore::open_writer(&path).unwrap();
    writer
        .save(&batch(&[(1, b"one".to_vec()), (2, b"two".to_vec())]), [])
        .unwrap();
    let mut reader = StateStore::open_reader(&path, private.path()).unwrap();
    for n in 0..20u16 {
        writer
            .save(&batch(&[(1, b"new".to_vec()), (100 + n, vec![7; 50])]), [])
            .unwrap();
    }
    let before: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(reader.view().get(&key(1)).unwrap(), Some(b"one".to_vec()));
    assert_eq!(reader.view().get(&key(100)).unwrap(), None);
    // A reader's saves go to its own directory, never the writer's.
    reader
        .save(
            &batch(&[(2, b"reader's".to_vec())]),
            [(b"cx".to_vec(), vec![1])],
        )
        .unwrap();
    assert_eq!(
        reader.view().get(&key(2)).unwrap(),
        Some(b"reader's".to_vec())
    );
    let after: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
    assert_eq!(writer.view().get(&key(2)).unwrap(), Some(b"two".to_vec()));
    assert_eq!(writer.small(b"cx"), None);
}

#[test]
fn a_damaged_run_is_named_and_cleared_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(PROJECTION_DIR);
    let mut store = StateStore::open_writer(&path).unwrap();
    let states: Vec<_> = (0..2000u16).map(|n| (n, vec![n as u8; 40])).collect();
    store.save(&batch(&states), []).unwrap();
    let run = store.view().runs[0].path().to_owned();
    let mut bytes = std::fs::read(&run).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&run, &bytes).unwrap();
    let store = StateStore::open_writer(&path).unwrap();
    let err = store
        .view()
        .scan(b"i")
        .find_map(Result::err)
        .expect("the flipped block is found");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(err.to_string().contains("run-"), "{err}");

    // Damage in the index is found on open, and the store asks to be
    // cleared before it saves again.
    let len = bytes.len();
    bytes[len - 50] ^= 1;
    std::fs::write(&run, &bytes).unwrap();
    let mut store = StateStore::open_writer(&path).unwrap();
    assert!(store.damage().is_some_and(|d| d.contains("index")));
    assert!(store.save(&batch(&[(1, vec![1])]), []).is_err());
    store.clear().unwrap();
    store.save(&batch(&[(1, vec![1])]), []).unwrap();
    let store = StateStore::open_writer(&path).unwrap();
    assert_eq!(store.damage(), None);
    assert_eq!(store.view().get(&key(1)).unwrap(), Some(vec![1]));
    assert_eq!(store.view().get(&key(2)).unwrap(), None);
}

#[test]
fn a_manifest_naming_a_foreign_path_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(PROJECTION_DIR);
    std::fs::create_dir_all(&path).unwrap();
    let listed = Listed {
        next_run: 5,
        runs: vec!["../../etc/passwd".into()],
        small: BTreeMap::new(),
    };
    std::fs::write(path.join(MANIFEST), listed.encode()).unwrap();
    let store = StateStore::open_writer(&path).unwrap();
    assert!(store.damage().is_some_and(|d| d.contains("not a run")));
}

#[test]
fn a_run_missing_under_its_manifest_is_retried_by_a_reader_then_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(PROJECTION_DIR);
    let private = tempfile::tempdir().unwrap();
    let mut writer = StateStore::open_writer(&path).unwrap();
    writer.save(&batch(&[(1, b"one".to_vec())]), []).unwrap();
    let run = writer.view().runs[0].path().to_owned();
    let mut store = StateStore::empty(&path, private.path(), false);
    assert!(store.load().is_ok());
    std::fs::remove_file(&run).unwrap();
    let mut store = StateStore::empty(&path, private.path(), false);
    let failed = store.load().unwrap_err();
    assert!(failed.run_missing, "{failed:?}");
    // Still missing after every attempt: damage, named.
    let reader = StateStore::open_reader(&path, private.path()).unwrap();
    assert!(reader.damage().is_some_and(|d| d.contains("run-")));
    // Damage that is not a missing run is not retried as one.
    std::fs::write(&run, b"not a run").unwrap();
    let mut store = StateStore::empty(&path, private.path(), false);
    assert!(!store.load().unwrap_err().run_missing);
}
