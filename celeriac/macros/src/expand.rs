//! Write the expansion.
//!
//! `#[celeriac::task] fn add(x: i64, y: i64) -> i64 { .. }` becomes the function unchanged
//! and, beside it, a module of the same name (functions and modules live in different
//! namespaces): `NAME`, `options()`, `task()` (a `TaskDef` whose body binds the call's
//! args/kwargs to the parameters by Python's rules, calls the function and turns what it
//! returns into the task's outcome) and the typed client stubs `delay` and `apply_async`.
//! A `remote` declaration gets the module without `task()`.
//!
//! Every type the expansion needs is decided by trait dispatch in `::celeriac::__private`,
//! never by reading the written return type, since an attribute below ours (such as
//! `#[locks::only_one]`) may rewrite it. Helper calls carry the span of the type they check,
//! so "cannot be a task argument" points at the parameter's type.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::parse;
use crate::validate::{self, Kind, Task};

pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match parse::task_fn(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let err = e.to_compile_error();
            return quote! { #err #item };
        }
    };
    // What is emitted on error: the function as written, minus our `#[arg]` attributes
    // (nothing for a bare signature, which is not valid Rust on its own).
    let fallback = func.to_token_stream();
    match parse::options(attr).and_then(|o| validate::task(o, func)) {
        Ok(task) => expand_task(task),
        Err(e) => {
            let err = e.to_compile_error();
            quote! { #err #fallback }
        }
    }
}

fn expand_task(task: Task) -> TokenStream {
    let func = &task.func;
    let ident = &func.sig.ident;
    let vis = &func.vis;
    let name = &task.name;
    let cfgs = func.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let module_docs = if task.remote {
        // A declaration's own docs describe the task; they move to the module.
        let docs = func.attrs.iter().filter(|a| a.path().is_ident("doc"));
        quote! {
            #(#docs)*
            #[doc = ""]
            #[doc = ::core::concat!("Celery task `", #name, "`, served elsewhere: its name, options and typed client stubs.")]
        }
    } else {
        let f = ident.to_string();
        quote! {
            #[doc = ::core::concat!("Celery task `", #name, "`: the registration (`task()`) and typed client stubs of the function `", #f, "`.")]
        }
    };
    let options = options_fn(&task);
    let stubs = stubs(&task);
    let registration = if task.remote {
        TokenStream::new()
    } else {
        registration(&task)
    };
    let user_fn = if task.remote {
        TokenStream::new()
    } else {
        func.to_token_stream()
    };
    quote! {
        #user_fn

        #module_docs
        #(#cfgs)*
        #[allow(non_snake_case)]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;

            #[doc = ::core::concat!("The task's Celery name: `", #name, "`.")]
            pub const NAME: &str = #name;

            #options
            #registration
            #stubs
        }
    }
}

fn some<T: ToTokens>(v: T) -> TokenStream {
    quote!(::core::option::Option::Some(#v))
}

fn options_fn(task: &Task) -> TokenStream {
    let o = &task.options;
    let mut fields = Vec::new();
    if let Some(b) = &o.acks_late {
        let v = some(b);
        fields.push(quote!(acks_late: #v));
    }
    if let Some(q) = &o.queue {
        let v = some(quote!(::std::string::String::from(#q)));
        fields.push(quote!(queue: #v));
    }
    for (field, secs) in [
        ("time_limit", &o.time_limit),
        ("soft_time_limit", &o.soft_time_limit),
        ("default_retry_delay", &o.default_retry_delay),
    ] {
        if let Some(s) = secs {
            let f = format_ident!("{field}");
            let v = some(float(s.value));
            fields.push(quote!(#f: #v));
        }
    }
    if let Some(n) = o.max_retries {
        let v = some(n);
        fields.push(quote!(max_retries: #v));
    }
    if let Some(list) = &o.autoretry_for {
        fields.push(quote!(autoretry_for: ::std::vec![#(::std::string::String::from(#list)),*]));
    }
    if let Some((factor, _)) = o.retry_backoff
        && factor > 0
    {
        let v = some(factor);
        fields.push(quote!(retry_backoff: #v));
    }
    if let Some(r) = &o.rate_limit {
        let v = some(quote!(::std::string::String::from(#r)));
        fields.push(quote!(rate_limit: #v));
    }
    if let Some(b) = &o.ignore_result {
        let v = some(b);
        fields.push(quote!(ignore_result: #v));
    }
    quote! {
        /// The task's options, under Celery's names (what `#[celeriac::task(...)]` set).
        #[allow(clippy::needless_update)]
        pub fn options() -> ::celeriac::task::TaskOptions {
            ::celeriac::task::TaskOptions {
                #(#fields,)*
                ..::core::default::Default::default()
            }
        }
    }
}

/// An `f64` literal that is one whatever the number looks like (`30` -> `30f64`).
fn float(v: f64) -> TokenStream {
    proc_macro2::Literal::f64_suffixed(v).into_token_stream()
}

fn registration(task: &Task) -> TokenStream {
    let func = &task.func;
    let ident = &func.sig.ident;
    let f = syn::ext::IdentExt::unraw(ident).to_string();
    let param_list = task.params.iter().map(|p| {
        let name = &p.name;
        let required = matches!(p.kind, Kind::Required);
        quote!(::celeriac::__private::Param { name: #name, required: #required })
    });
    // Only the decoding call carries the parameter type's span (so "cannot be a task
    // argument" points there); paths stay at the call site, where lints such as
    // `unused_qualifications` leave generated code alone.
    let args = task.params.iter().enumerate().map(|(i, p)| {
        let span = p.ty.span();
        let decode = quote_spanned!(span=> __bound.decode(#i, __v)?);
        match &p.kind {
            Kind::Required => quote_spanned!(span=> __bound.required(#i)?),
            Kind::Optional => quote! {
                match __bound.value(#i) {
                    ::core::option::Option::Some(__v) => #decode,
                    ::core::option::Option::None => ::core::option::Option::None,
                }
            },
            Kind::Default(e) => {
                // A string literal also fills a `String` (or `PathBuf`, ...) parameter; any
                // other expression has the parameter's type, so `10` is a `u32` where one is due.
                let default = match e {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(_),
                        ..
                    }) => quote!(::core::convert::Into::into(#e)),
                    _ => e.to_token_stream(),
                };
                quote! {
                    match __bound.value(#i) {
                        ::core::option::Option::Some(__v) => #decode,
                        ::core::option::Option::None => #default,
                    }
                }
            }
        }
    });
    let ctx = task
        .bind
        .then(|| quote!(&::celeriac::__private::context(NAME, __call, __options),));
    let call = quote!(super::#ident(#ctx #(#args),*));
    let call = if func.sig.asyncness.is_some() {
        quote!(::celeriac::__private::block_on(#call)?)
    } else {
        call
    };
    let out_span = match &func.sig.output {
        syn::ReturnType::Default => func.sig.ident.span(),
        syn::ReturnType::Type(_, ty) => ty.span(),
    };
    let finish = quote_spanned! {out_span=>
        (&&&&&&::celeriac::__private::probe(&__out))
            .celeriac_kind()
            .finish(__out, __options, __call.retries)
    };
    quote! {
        /// The task definition a worker registers (`celeriac::tasks![...]` calls this).
        pub fn task() -> ::celeriac::task::TaskDef {
            let __options = options();
            ::celeriac::task::TaskDef::new(NAME, move |__call: &::celeriac::task::TaskCall| {
                __run(__call, &__options)
            })
            .with_options(options())
        }

        fn __run(
            __call: &::celeriac::task::TaskCall,
            __options: &::celeriac::task::TaskOptions,
        ) -> ::core::result::Result<
            ::celeriac::__private::serde_json::Value,
            ::celeriac::task::TaskError,
        > {
            #[allow(unused_imports)]
            use ::celeriac::__private::{
                ViaBoxError as _, ViaIntoTaskError as _, ViaSendBoxError as _, ViaStdError as _,
                ViaUnsupportedError as _, ViaValue as _,
            };
            static __SIGNATURE: ::celeriac::__private::Signature = ::celeriac::__private::Signature {
                func: #f,
                params: &[#(#param_list),*],
            };
            let __bound = __SIGNATURE.bind(__call)?;
            let __out = #call;
            #finish
        }
    }
}

fn stubs(task: &Task) -> TokenStream {
    let generics = &task.func.sig.generics;
    let where_clause = &generics.where_clause;
    let result = &task.result;
    let result_span = match &task.func.sig.output {
        syn::ReturnType::Default => task.func.sig.ident.span(),
        syn::ReturnType::Type(_, ty) => ty.span(),
    };
    let ret = quote! {
        ::core::result::Result<::celeriac::TypedResult<#result>, ::celeriac::client::ClientError>
    };
    let client = if task.params.iter().any(|p| p.name == "client") {
        format_ident!("celeriac_client")
    } else {
        format_ident!("client")
    };
    let idents: Vec<_> = task.params.iter().map(|p| &p.ident).collect();
    let types: Vec<_> = task.params.iter().map(|p| &p.ty).collect();
    let (args_ty, args_value) = if task.params.is_empty() {
        (quote!(()), quote!(()))
    } else {
        (quote!((#(#types,)*)), quote!((#(#idents,)*)))
    };
    let encoded = task.params.iter().enumerate().map(|(i, p)| {
        let name = &p.name;
        let index = syn::Index {
            index: i as u32,
            span: p.ty.span(),
        };
        quote_spanned! {p.ty.span()=>
            ::celeriac::__private::encode_arg(NAME, #name, &args.#index)?
        }
    });
    let unused = task.params.is_empty().then(|| quote!(let () = args;));
    let queue = match &task.options.queue {
        Some(q) => some(q),
        None => quote!(::core::option::Option::None),
    };
    let send = quote_spanned! {result_span=>
        ::celeriac::__private::send::<#result>(client, NAME, __args, opts, __queue).await
    };
    let sig_params: Vec<_> = generics.params.iter().collect();
    let generics = if sig_params.is_empty() {
        TokenStream::new()
    } else {
        quote!(<#(#sig_params),*>)
    };
    let names = task
        .params
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let delay_doc = format!(
        "Send the task with these arguments (Celery's `delay({names})`), to the task's \
         `queue` if it has one; wait for the typed result with `.get(timeout)`."
    );
    quote! {
        #[doc = #delay_doc]
        #[allow(clippy::too_many_arguments)]
        pub async fn delay #generics (
            #client: &::celeriac::Client,
            #(#idents: #types),*
        ) -> #ret #where_clause {
            self::apply_async(#client, #args_value, ::core::default::Default::default()).await
        }

        /// Send the task with these arguments (a tuple, in parameter order) and send options
        /// (Celery's `apply_async(args, ...)`); `opts.queue` defaults to the task's `queue`.
        /// An argument serde cannot encode is `ClientError::Encode`, naming it.
        pub async fn apply_async #generics (
            client: &::celeriac::Client,
            args: #args_ty,
            opts: ::celeriac::SendOptions,
        ) -> #ret #where_clause {
            #unused
            let __args: ::std::vec::Vec<::celeriac::__private::serde_json::Value> =
                ::std::vec![#(#encoded),*];
            let __queue: ::core::option::Option<&str> = #queue;
            #send
        }
    }
}

pub(crate) fn exception(input: TokenStream) -> TokenStream {
    let input: syn::DeriveInput = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let checked =
        parse::exception_args(&input.attrs).and_then(|args| validate::exception(input, args));
    match checked {
        Ok(e) => expand_exception(e),
        Err(e) => e.to_compile_error(),
    }
}

fn expand_exception(e: validate::Exception) -> TokenStream {
    let ident = &e.input.ident;
    let (impl_generics, ty_generics, where_clause) = e.input.generics.split_for_impl();
    let module = &e.module;
    let name = &e.name;
    quote! {
        impl #impl_generics ::core::convert::From<#ident #ty_generics> for ::celeriac::task::TaskError
        #where_clause
        {
            fn from(e: #ident #ty_generics) -> Self {
                ::celeriac::task::TaskError::exception(
                    #module,
                    #name,
                    ::std::string::ToString::to_string(&e),
                )
            }
        }
    }
}
