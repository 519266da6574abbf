//! Compile-fail tests for `#[only_one]`: each `ui/*.rs` misuses the attribute and its
//! `.stderr` is the exact message the user sees (documentation as much as a test).

#[test]
fn only_one_misuse_is_a_compile_error_pointing_at_the_mistake() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
