//! Compile-fail tests for `#[celeriac::task]` and `#[derive(celeriac::Exception)]`: each
//! `ui/*.rs` misuses a macro and its `.stderr` is the exact message the user sees
//! (documentation as much as a test).

#[test]
fn task_misuse_is_a_compile_error_pointing_at_the_mistake() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
