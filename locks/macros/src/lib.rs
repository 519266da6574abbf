//! `#[only_one]`: run a function only while holding a global Redis lock.
//!
//! The work is split as tokio-macros and thiserror split it: `args` parses and
//! validates the attribute, `expand` checks the item and writes the new body, which
//! calls hidden helpers in `::locks::__private` by absolute path. On any error the user's
//! item is emitted unchanged next to `compile_error!` pointing at the offending tokens, so
//! one mistake yields one message and no cascade of "function not found".
//!
//! Documentation of the attribute lives on its re-export, `locks::only_one`.

use proc_macro::TokenStream;

mod args;
mod expand;

/// See `locks::only_one`.
#[proc_macro_attribute]
pub fn only_one(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::only_one(attr.into(), item.into()).into()
}
