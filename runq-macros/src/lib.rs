//! `#[runq::test]`: turns one function into one scheduler test per
//! (topology, scheduler profile).
//!
//! | file | owns |
//! | --- | --- |
//! | `lib.rs` | the attribute's entry point |
//! | `attrs.rs` | the attribute grammar and its compile-time errors |
//! | `presets.rs` | named gauntlets (`gauntlet = "small"`) |
//! | `expand.rs` | the generated registration |
//!
//! The function itself is kept as written; the expansion registers a
//! `runq::test::TestDef` describing every case, and the harness
//! (`runq::test::main`) turns each case into a test named
//! `fn_name::1n2l2c1t::profile`. See `runq::test` for the runtime side.

use proc_macro::TokenStream;

mod attrs;
mod expand;
mod presets;

/// Declares a runq test. See the `runq::test` module for the attributes
/// and the harness.
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attrs = syn::parse_macro_input!(attr as attrs::RawAttrs);
    let function = syn::parse_macro_input!(item as syn::ItemFn);
    match attrs::TestAttrs::resolve(attrs).and_then(|a| expand::expand(a, function)) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}
