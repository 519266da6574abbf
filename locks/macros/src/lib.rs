use proc_macro::TokenStream;
#[proc_macro_attribute]
pub fn only_one(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
