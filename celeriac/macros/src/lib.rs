//! `#[celeriac::task]` and `#[derive(celeriac::Exception)]`.
//!
//! The work is split as tokio-macros and thiserror split it: `parse` reads the attribute's
//! options and the annotated item, `validate` checks them and builds the model `expand`
//! writes out. The expansion calls hidden helpers in `::celeriac::__private` by absolute
//! path, so a crate using the attribute needs no serde of its own. On any error the user's
//! item is emitted (when it is valid Rust) next to `compile_error!` pointing at the
//! offending tokens, so one mistake yields one message and no cascade.
//!
//! Documentation of both macros lives on their re-exports, `celeriac::task` and
//! `celeriac::Exception`.

use proc_macro::TokenStream;

mod expand;
mod parse;
mod validate;

/// (`#[celeriac::task]` is implemented in the `celeriac-macros` crate; use it through
/// `celeriac`, where it is documented.)
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}

/// (`#[derive(celeriac::Exception)]` is implemented in the `celeriac-macros` crate; use it
/// through `celeriac`, where it is documented.)
#[proc_macro_derive(Exception, attributes(exception))]
pub fn exception(input: TokenStream) -> TokenStream {
    expand::exception(input.into()).into()
}
