use super::*;

fn sample() -> Checkpoint {
    Checkpoint {
        origin: "lifeledger.invalid/test".into(),
        time: "2026-11-24T10:00:00Z".parse().unwrap(),
        chains: vec![
            ChainRoot {
                chain: "file".into(),
                size: 10,
                root: [1; 32],
            },
            ChainRoot {
                chain: "kafka:lifecycle:0".into(),
                size: 5,
                root: [2; 32],
            },
        ],
    }
}

#[test]
fn a_signed_note_verifies_and_round_trips() {
    let key = PrivateKey::from_seed("auditor-test", [7; 32]).unwrap();
    let note = key.sign(&sample());
    assert!(note.starts_with("lifeledger.invalid/test\n15\n"));
    assert!(note.contains("\n\n\u{2014} auditor-test "));
    assert_eq!(verify_note(&note, &key.public()).unwrap(), sample());
    let public = PublicKey::parse(&key.public().to_string()).unwrap();
    assert_eq!(public, key.public());
    let again = PrivateKey::parse(&key.to_text()).unwrap();
    assert_eq!(
        again.sign(&sample()),
        note,
        "Ed25519 signatures are deterministic"
    );
}

#[test]
fn a_changed_body_or_forged_signature_fails() {
    let key = PrivateKey::from_seed("auditor-test", [7; 32]).unwrap();
    let note = key.sign(&sample());
    let changed = note.replacen("chain file 10", "chain file 11", 1);
    assert!(matches!(
        verify_note(&changed, &key.public()),
        Err(NoteError::BadSignature(_))
    ));
    let other = PrivateKey::from_seed("auditor-test", [8; 32]).unwrap();
    // Another key under the same name: its key ID differs, so it is a wrong key.
    assert!(matches!(
        verify_note(&other.sign(&sample()), &key.public()),
        Err(NoteError::WrongKey { .. })
    ));
    // Same key ID, signature bytes replaced.
    let (body, sig) = note.split_once("\u{2014} auditor-test ").unwrap();
    let mut blob = B64.decode(sig.trim()).unwrap();
    blob[10] ^= 1;
    let forged = format!("{body}\u{2014} auditor-test {}\n", B64.encode(blob));
    assert!(matches!(
        verify_note(&forged, &key.public()),
        Err(NoteError::BadSignature(_))
    ));
}

#[test]
fn the_root_line_must_match_the_chain_lines() {
    let body = sample()
        .body()
        .replacen("chain file 10", "chain file 12", 1);
    assert_eq!(Checkpoint::parse_body(&body), Err(NoteError::RootMismatch));
}

#[test]
fn keys_whose_base64_holds_a_plus_sign_round_trip() {
    // Find a seed whose public key's base64 contains '+'.
    let key = (0u8..=255)
        .map(|b| PrivateKey::from_seed("k", [b; 32]).unwrap())
        .find(|k| {
            k.public().to_string().matches('+').count() > 2 && k.to_text().matches('+').count() > 4
        })
        .expect("some seed gives a '+' in base64");
    assert_eq!(
        PublicKey::parse(&key.public().to_string()).unwrap(),
        key.public()
    );
    assert_eq!(
        PrivateKey::parse(&key.to_text()).unwrap().public(),
        key.public()
    );
}
