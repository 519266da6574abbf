//! The Redis key guide (`docs/redis-keys.md`) against the names the code defines: every
//! pattern in `celeriac::transport::keys::ALL_KEY_PATTERNS` is documented, the guide's list of
//! code names is exactly that array, and the names built by the key functions (chord suffixes,
//! pidbox and reply queues, channels, the lock library's keys) appear in the guide as well.

use celeriac::transport::keys;
use std::collections::BTreeSet;

fn guide() -> String {
    let path = tests::workspace_root().join("docs/redis-keys.md");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the key guide {}: {e}", path.display()))
}

/// The backticked names listed under `## Names defined in code`.
fn listed_code_names(guide: &str) -> BTreeSet<String> {
    let section = guide
        .split("\n## Names defined in code")
        .nth(1)
        .expect("the guide has a `## Names defined in code` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- `"))
        .filter_map(|l| l.strip_suffix('`'))
        .map(String::from)
        .collect()
}

/// A name as the guide writes it: the kombu separator spelled `\x06\x16`.
fn spelled(name: &str) -> String {
    name.replace(keys::SEP, "\\x06\\x16")
}

#[test]
fn keyguide_documents_every_key_pattern_defined_in_code() {
    let guide = guide();
    let missing: Vec<&str> = keys::ALL_KEY_PATTERNS
        .iter()
        .copied()
        .filter(|p| !guide.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/redis-keys.md does not document these names from keys.rs: {missing:?}"
    );
}

#[test]
fn keyguide_code_name_list_matches_all_key_patterns_exactly() {
    let listed = listed_code_names(&guide());
    let code: BTreeSet<String> = keys::ALL_KEY_PATTERNS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let only_guide: Vec<&String> = listed.difference(&code).collect();
    let only_code: Vec<&String> = code.difference(&listed).collect();
    assert!(
        only_guide.is_empty() && only_code.is_empty(),
        "`## Names defined in code` in docs/redis-keys.md differs from ALL_KEY_PATTERNS\n\
         only in the guide: {only_guide:?}\nonly in the code:  {only_code:?}"
    );
}

#[test]
fn keyguide_covers_the_names_the_key_functions_build() {
    let guide = guide();
    let db0 = |s: String| s.replacen("/0.", "/<db>.", 1);
    let built: Vec<String> = vec![
        spelled(&keys::queue_key("<queue>", 3)).replace('3', "<3|6|9>"),
        keys::binding("<exchange>"),
        keys::binding_permanent("<exchange>"),
        keys::pidbox_queue("<node>"),
        keys::reply_queue("<oid>"),
        db0(keys::pidbox_channel(0)),
        db0(keys::event_channel(0, "<routing_key>")),
        db0(keys::event_pattern(0)),
        keys::task_meta("<task_id>"),
        keys::group_meta("<group_id>", ""),
        keys::UNACKED.into(),
        keys::UNACKED_INDEX.into(),
        keys::UNACKED_MUTEX.into(),
        keys::DEAD_LETTER.into(),
        keys::HOLDERS.into(),
        keys::BINDING_DEADLINES.into(),
        // The lock library's names.
        locks::keys::holder_key("<name>"),
        locks::keys::FENCE_KEY.into(),
        locks::keys::queue_key("<name>"),
        locks::keys::queue_alive_key("<name>"),
        locks::keys::released_channel("<name>"),
        locks::keys::keyspace_channel(0, "<name>").replace("@0__", "@<db>__"),
    ];
    let missing: Vec<&String> = built.iter().filter(|n| !guide.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "docs/redis-keys.md does not mention: {missing:?}"
    );
    // Chord suffixes, as the chord join uses them.
    for suffix in [".j", ".t", ".s", ".d", ".c"] {
        assert!(
            guide.contains(&format!("`{suffix}`")),
            "chord key suffix {suffix} is not documented"
        );
    }
}

#[test]
fn keyguide_recommends_scan_and_shows_how_to_quote_the_separator() {
    let guide = guide();
    for needle in ["--scan", "--no-raw", "$'", "HSCAN"] {
        assert!(guide.contains(needle), "the guide lacks {needle:?}");
    }
    // Every redis-cli command in the guide avoids KEYS.
    let bad: Vec<&str> = guide
        .lines()
        .filter(|l| l.contains("redis-cli") && l.split_whitespace().any(|w| w == "KEYS"))
        .collect();
    assert!(bad.is_empty(), "redis-cli KEYS in the guide: {bad:?}");
}
