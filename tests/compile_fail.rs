//! The Rust-side half of the `values_template` rule: client-side Rust code cannot set a
//! component's values template. The TOML side is tested in `check_rules.rs`; here trybuild
//! compiles small programs against `platform` and `components` and checks that each attempt
//! is refused by the compiler, with the error recorded beside it in a `.stderr` file.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p xtask --test
//! compile_fail`, then review them: each must show the intended error, not an unrelated one.

#[test]
fn client_side_rust_cannot_set_values_template() {
    let cases = trybuild::TestCases::new();
    // Paths are relative to the xtask package, whose integration tests these are.
    cases.compile_fail("../tests/compile_fail/*.rs");
    // The harness compiles what it should: setting `values_custom` is the supported way.
    cases.pass("../tests/compile_fail/pass/*.rs");
}
