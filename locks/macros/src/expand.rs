//! Check the annotated item and write the expansion.
//!
//! `async fn f(a) -> T` becomes `async fn f(a) -> Result<T, ::locks::NotRun>`: format the
//! key, acquire (per policy), run the original body as an inner future raced against the
//! watchdog's loss signal, release, return. A plain `fn` does the same through the
//! blocking API and runs the body in a closure; the blocking guard releases in `Drop`, so
//! a panic in the body still frees the lock before unwinding leaves the function. An
//! async guard dropped by cancellation releases in the background.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

use crate::args::{self, Args, Policy};

pub(crate) fn only_one(attr: TokenStream, item: TokenStream) -> TokenStream {
    match try_expand(attr, item.clone()) {
        Ok(ts) => ts,
        Err(e) => {
            let err = e.to_compile_error();
            quote! { #err #item }
        }
    }
}

fn try_expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let func: ItemFn = match syn::parse2::<syn::Item>(item)? {
        syn::Item::Fn(f) => f,
        other => {
            return Err(syn::Error::new(
                item_span(&other),
                "#[only_one] applies to a function (`fn` or `async fn`)",
            ));
        }
    };
    let args = args::parse(attr)?;
    validate(&func, &args)?;
    Ok(expand(func, args))
}

fn item_span(item: &syn::Item) -> proc_macro2::Span {
    match item {
        syn::Item::Struct(s) => s.struct_token.span,
        syn::Item::Enum(e) => e.enum_token.span,
        syn::Item::Impl(i) => i.impl_token.span,
        syn::Item::Mod(m) => m.mod_token.span,
        syn::Item::Trait(t) => t.trait_token.span,
        other => other.span(),
    }
}

fn param_names(func: &ItemFn) -> Vec<String> {
    func.sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(i) => Some(i.ident.to_string()),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
        .collect()
}

fn validate(func: &ItemFn, args: &Args) -> syn::Result<()> {
    if let Some(c) = &func.sig.constness {
        return Err(syn::Error::new(
            c.span,
            "#[only_one] cannot be used on a `const fn`: taking a lock is I/O",
        ));
    }
    if let ReturnType::Type(_, ty) = &func.sig.output
        && contains_impl_trait(ty)
    {
        return Err(syn::Error::new(
            ty.span(),
            "#[only_one] does not support `impl Trait` return types; name the type",
        ));
    }
    let params = param_names(func);
    for name in &args.key_args {
        if !params.contains(name) {
            let listed = if params.is_empty() {
                "it has none".to_string()
            } else {
                format!("it has {}", params.join(", "))
            };
            return Err(syn::Error::new(
                args.key.span(),
                format!(
                    "key placeholder `{{{name}}}` is not an argument of `{}` ({listed})",
                    func.sig.ident
                ),
            ));
        }
    }
    Ok(())
}

fn contains_impl_trait(ty: &Type) -> bool {
    match ty {
        Type::ImplTrait(_) => true,
        Type::Reference(r) => contains_impl_trait(&r.elem),
        Type::Paren(p) => contains_impl_trait(&p.elem),
        Type::Tuple(t) => t.elems.iter().any(contains_impl_trait),
        Type::Path(p) => p.path.segments.iter().any(|s| match &s.arguments {
            syn::PathArguments::AngleBracketed(a) => a.args.iter().any(|g| match g {
                syn::GenericArgument::Type(t) => contains_impl_trait(t),
                _ => false,
            }),
            _ => false,
        }),
        _ => false,
    }
}

fn expand(func: ItemFn, args: Args) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = func;
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let out_span = sig.output.span();
    sig.output = syn::parse_quote_spanned! {out_span=>
        -> ::core::result::Result<#ret, ::locks::NotRun>
    };

    let key = &args.key;
    let timeout_ms = args.timeout_ms;
    let policy = match args.policy {
        Policy::Skip => quote!(::locks::__private::Policy::Skip),
        Policy::Wait => quote!(::locks::__private::Policy::Wait),
        Policy::Error => quote!(::locks::__private::Policy::Error),
    };
    let wait_ms = match args.wait_ms {
        Some(ms) if ms > 0 => quote!(::core::option::Option::Some(#ms)),
        _ => quote!(::core::option::Option::None),
    };
    let purpose = match &args.purpose {
        Some(p) => quote!(#p),
        None => {
            let name = sig.ident.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #name))
        }
    };
    let watchdog = args.watchdog;
    let fair = args.fair;
    let client = match &args.client {
        Some(expr) => quote_spanned! {expr.span()=> #expr },
        None => quote! {
            match ::locks::__private::default_client() {
                ::core::result::Result::Ok(c) => c,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
            }
        },
    };
    let prologue = quote! {
        const __LOCKS_SPEC: ::locks::__private::Spec = ::locks::__private::Spec {
            timeout_ms: #timeout_ms,
            policy: #policy,
            wait_ms: #wait_ms,
            purpose: #purpose,
            watchdog: #watchdog,
            fair: #fair,
        };
        let __locks_key: ::std::string::String = ::std::format!(#key);
        let __locks_client = #client;
    };
    let body = if sig.asyncness.is_some() {
        quote! {
            #prologue
            let __locks_guard = match ::locks::__private::acquire(
                ::locks::__private::client_ref(&__locks_client), __locks_key, &__LOCKS_SPEC,
            ).await {
                ::core::result::Result::Ok(g) => g,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
            };
            let __locks_out = ::locks::__private::run_async(
                &__locks_guard,
                ::locks::__private::typed::<#ret, _>(async #block),
            ).await;
            ::locks::__private::finish(__locks_guard).await;
            __locks_out
        }
    } else {
        quote! {
            #prologue
            let __locks_guard = match ::locks::__private::acquire_blocking(
                ::locks::__private::client_ref(&__locks_client), __locks_key, &__LOCKS_SPEC,
            ) {
                ::core::result::Result::Ok(g) => g,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
            };
            #[allow(clippy::redundant_closure_call)]
            let __locks_out = (|| -> #ret #block)();
            ::locks::__private::finish_blocking(__locks_guard);
            ::core::result::Result::Ok(__locks_out)
        }
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    }
}
