//! Check what `parse` read and build the model `expand` writes out: a task whose options
//! make sense together and whose function can be called with JSON arguments (no type or
//! const generics, no `self`, plain parameter names, a context first when `bind = true`).
//!
//! Every problem found is reported, each at its own tokens, combined into one error.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::{
    Expr, FnArg, GenericArgument, GenericParam, Ident, LitStr, Pat, PathArguments, ReturnType, Type,
};

use crate::parse::{self, ExceptionArgs, Options, TaskFn};

/// A task, ready to expand.
pub(crate) struct Task {
    pub func: TaskFn,
    pub options: Options,
    /// The `NAME` expression: the `name` option, or `crate.function`.
    pub name: TokenStream,
    /// Whether the first parameter is the bind context.
    pub bind: bool,
    /// The task's arguments (the context excluded).
    pub params: Vec<Param>,
    /// What a typed result decodes into (`T` of a written `Result<T, E>`, owned).
    pub result: Type,
    pub remote: bool,
}

/// A task argument.
pub(crate) struct Param {
    pub ident: Ident,
    /// The keyword name (the identifier without `r#`).
    pub name: String,
    pub ty: Type,
    pub kind: Kind,
}

/// What happens when a call does not supply a parameter.
pub(crate) enum Kind {
    /// `TypeError: f() missing ... argument`.
    Required,
    /// An `Option<T>`: `None`.
    Optional,
    /// `#[arg(default = <expr>)]`.
    Default(Expr),
}

/// Collects every error instead of stopping at the first.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.add(syn::Error::new(span, msg));
    }

    /// An error spanning all of `node` (a type, a pattern, `&self`), not just its first token.
    fn push_spanned(&mut self, node: &dyn ToTokens, msg: impl std::fmt::Display) {
        self.add(syn::Error::new_spanned(node, msg));
    }

    fn add(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

pub(crate) fn task(options: Options, func: TaskFn) -> syn::Result<Task> {
    let mut errors = Errors::default();
    let remote = options.remote.is_some();
    check_options(&options, &mut errors);
    let bind = options.bind.as_ref().is_some_and(|b| b.value);

    let sig = &func.sig;
    match (&func.body, remote) {
        (Some(body), true) => errors.push(
            body.brace_token.span.join(),
            "a `remote` task is declared without a body (`fn name(args) -> T;`): it runs \
             elsewhere; remove the body, or remove `remote` to serve the task here",
        ),
        (None, false) => errors.push(
            func.semi.map_or(sig.ident.span(), |s| s.span),
            "a task needs a body; to declare a task served elsewhere (e.g. by Python), add \
             `remote` and a `name`",
        ),
        _ => {}
    }
    if let Some(u) = &sig.unsafety {
        errors.push(
            u.span,
            "a task cannot be an `unsafe fn`: the worker calls it with whatever a message holds",
        );
    }
    if let Some(v) = &sig.variadic {
        errors.push_spanned(v, "a task cannot be variadic");
    }
    for g in &sig.generics.params {
        match g {
            GenericParam::Lifetime(_) => {}
            GenericParam::Type(_) | GenericParam::Const(_) => errors.push_spanned(
                g,
                "a task cannot be generic: its arguments arrive as JSON, so every parameter \
                 needs one concrete type",
            ),
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && contains_impl_trait(ty)
    {
        errors.push_spanned(
            ty,
            "a task cannot return `impl Trait`: the typed client stubs need the result's type; \
             name it",
        );
    }

    let mut params = Vec::new();
    for (i, (input, attrs)) in sig.inputs.iter().zip(&func.arg_attrs).enumerate() {
        let t = match input {
            FnArg::Receiver(r) => {
                errors.push_spanned(
                    r,
                    "a task is a free function: `self` is not allowed (write a function whose \
                     parameters are the task's arguments)",
                );
                continue;
            }
            FnArg::Typed(t) => t,
        };
        let default = match parse::arg_default(attrs) {
            Ok(d) => d,
            Err(e) => {
                errors.add(e);
                None
            }
        };
        if remote && let Some(a) = attrs.first() {
            errors.push_spanned(
                a,
                "`#[arg(...)]` has no effect on a `remote` task: the stubs send every argument",
            );
        }
        let is_ctx = is_context(&t.ty);
        if bind && i == 0 {
            if !is_ctx {
                errors.push_spanned(
                    &t.ty,
                    "with `bind = true` the first parameter must be the task context: \
                     `ctx: &celeriac::task::Context`",
                );
            }
            if let Some(a) = attrs.first() {
                errors.push_spanned(a, "the task context takes no `#[arg(...)]`");
            }
            continue;
        }
        if is_ctx {
            let msg = if bind {
                "the task context must be the first parameter"
            } else {
                "a task context parameter needs `bind = true` in #[celeriac::task(...)]"
            };
            errors.push_spanned(&t.ty, msg);
            continue;
        }
        let ident = match &*t.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            other => {
                errors.push_spanned(
                    other,
                    "a task parameter must be a plain name (`x: i64`): the name is the keyword \
                     a caller may pass the argument under",
                );
                continue;
            }
        };
        if contains_impl_trait(&t.ty) {
            errors.push_spanned(
                &t.ty,
                "a task parameter cannot be `impl Trait`: its argument arrives as JSON, so it \
                 needs one concrete type",
            );
            continue;
        }
        let kind = match default {
            Some(e) => Kind::Default(e),
            None if is_option(&t.ty) => Kind::Optional,
            None => Kind::Required,
        };
        params.push(Param {
            name: syn::ext::IdentExt::unraw(&ident).to_string(),
            ident,
            ty: (*t.ty).clone(),
            kind,
        });
    }
    if bind && !sig.inputs.iter().any(|a| matches!(a, FnArg::Typed(_))) {
        errors.push(
            sig.paren_token.span.join(),
            "with `bind = true` the first parameter must be the task context: \
             `ctx: &celeriac::task::Context`",
        );
    }
    errors.finish()?;

    let name = match &options.name {
        Some(n) => n.to_token_stream(),
        None => {
            let f = syn::ext::IdentExt::unraw(&sig.ident).to_string();
            quote!(::core::concat!(::core::env!("CARGO_CRATE_NAME"), ".", #f))
        }
    };
    let result = typed_result(&sig.output);
    Ok(Task {
        func,
        options,
        name,
        bind,
        params,
        result,
        remote,
    })
}

fn check_options(o: &Options, errors: &mut Errors) {
    if let Some(span) = o.remote {
        if o.name.is_none() {
            errors.push(
                span,
                "a `remote` task needs `name`: the Celery name it is served under, \
                 e.g. #[celeriac::task(name = \"proj.tasks.run\", remote)]",
            );
        }
        for (opt, span) in &o.given {
            if !matches!(opt.as_str(), "name" | "queue" | "remote") {
                errors.push(
                    *span,
                    format!(
                        "`{opt}` has no effect on a `remote` task (the worker serving it \
                         decides); with `remote` only `name` and `queue` apply"
                    ),
                );
            }
        }
    }
    for (lit, what) in [(&o.name, "name"), (&o.queue, "queue")] {
        if let Some(lit) = lit
            && lit.value().trim().is_empty()
        {
            errors.push(lit.span(), format!("`{what}` must not be empty"));
        }
    }
    for (s, what) in [
        (&o.time_limit, "time_limit"),
        (&o.soft_time_limit, "soft_time_limit"),
    ] {
        if let Some(s) = s
            && !(s.value.is_finite() && s.value > 0.0)
        {
            errors.push(s.span, format!("`{what}` must be greater than zero"));
        }
    }
    if let Some(s) = &o.default_retry_delay
        && !s.value.is_finite()
    {
        errors.push(
            s.span,
            "`default_retry_delay` must be a finite number of seconds",
        );
    }
    if let Some(r) = &o.rate_limit
        && !valid_rate(&r.value())
    {
        errors.push(
            r.span(),
            "`rate_limit` must be a number of tasks per second, minute or hour: \"10/s\", \
             \"10/m\", \"10/h\" (or \"10\", per second)",
        );
    }
    if let Some(list) = &o.autoretry_for {
        for lit in list {
            if !valid_dotted_name(&lit.value()) {
                errors.push(
                    lit.span(),
                    "an exception type name: `ValueError`, or with its module, \
                     `myapp.errors.Busy`",
                );
            }
        }
    }
    if let Some((factor, span)) = o.retry_backoff
        && factor > 0
        && o.autoretry_for.as_ref().is_none_or(|l| l.is_empty())
    {
        errors.push(
            span,
            "`retry_backoff` only applies to retries made by `autoretry_for` (as in Celery); \
             add `autoretry_for = [...]`",
        );
    }
}

/// Celery's rate strings: `"<n>"`, `"<n>/s"`, `"<n>/m"`, `"<n>/h"`.
fn valid_rate(s: &str) -> bool {
    let (n, unit) = s.split_once('/').unwrap_or((s, "s"));
    matches!(unit, "s" | "m" | "h") && n.parse::<f64>().is_ok_and(|x| x.is_finite() && x >= 0.0)
}

fn valid_dotted_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c == '_' || c.is_alphabetic())
                && part.chars().all(|c| c == '_' || c.is_alphanumeric())
        })
}

/// `&Context`, `&celeriac::task::Context<'_>`, ...: a shared reference to a path ending in
/// `Context`.
fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) if r.mutability.is_none() => match &*r.elem {
            Type::Path(p) => p.qself.is_none() && last_ident_is(&p.path, "Context"),
            _ => false,
        },
        Type::Paren(p) => is_context(&p.elem),
        _ => false,
    }
}

/// Written as `Option<T>` (by any path ending in `Option`).
fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => {
            p.qself.is_none()
                && p.path.segments.last().is_some_and(|s| {
                    s.ident == "Option" && matches!(s.arguments, PathArguments::AngleBracketed(_))
                })
        }
        Type::Paren(p) => is_option(&p.elem),
        Type::Group(g) => is_option(&g.elem),
        _ => false,
    }
}

fn last_ident_is(path: &syn::Path, name: &str) -> bool {
    path.segments.last().is_some_and(|s| s.ident == name)
}

fn contains_impl_trait(ty: &Type) -> bool {
    match ty {
        Type::ImplTrait(_) => true,
        Type::Reference(r) => contains_impl_trait(&r.elem),
        Type::Paren(p) => contains_impl_trait(&p.elem),
        Type::Group(g) => contains_impl_trait(&g.elem),
        Type::Slice(s) => contains_impl_trait(&s.elem),
        Type::Array(a) => contains_impl_trait(&a.elem),
        Type::Tuple(t) => t.elems.iter().any(contains_impl_trait),
        Type::Path(p) => p.path.segments.iter().any(|s| match &s.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().any(|g| match g {
                GenericArgument::Type(t) => contains_impl_trait(t),
                _ => false,
            }),
            _ => false,
        }),
        _ => false,
    }
}

/// The type a typed result decodes into, from the written return type: `T` of
/// `Result<T, E>` (any path whose last segment is `Result` with generic arguments), `()`
/// for no return type, the written type otherwise; a borrowed type is made owned (`&str` ->
/// `String`, `&[T]` -> `Vec<T>`, `&T` -> `T`), since a result arrives as JSON.
fn typed_result(output: &ReturnType) -> Type {
    let ty = match output {
        ReturnType::Default => return syn::parse_quote!(()),
        ReturnType::Type(_, ty) => &**ty,
    };
    let ok = match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().and_then(|s| {
            if s.ident != "Result" {
                return None;
            }
            match &s.arguments {
                PathArguments::AngleBracketed(a) => a.args.iter().find_map(|g| match g {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                }),
                _ => None,
            }
        }),
        _ => None,
    };
    owned(ok.unwrap_or(ty))
}

fn owned(ty: &Type) -> Type {
    match ty {
        Type::Reference(r) => match &*r.elem {
            Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                syn::parse_quote!(::std::string::String)
            }
            Type::Slice(s) => {
                let elem = owned(&s.elem);
                syn::parse_quote!(::std::vec::Vec<#elem>)
            }
            other => owned(other),
        },
        Type::Paren(p) => owned(&p.elem),
        other => other.clone(),
    }
}

/// `#[derive(celeriac::Exception)]`, ready to expand.
pub(crate) struct Exception {
    pub input: syn::DeriveInput,
    pub module: LitStr,
    pub name: LitStr,
}

pub(crate) fn exception(input: syn::DeriveInput, args: ExceptionArgs) -> syn::Result<Exception> {
    let mut errors = Errors::default();
    let module = match args.module {
        Some(m) => {
            if !valid_dotted_name(&m.value()) {
                errors.push(
                    m.span(),
                    "`module` is a Python module path, e.g. module = \"myapp.errors\"",
                );
            }
            m
        }
        None => {
            errors.push(
                input.ident.span(),
                "missing `module`: add #[exception(module = \"myapp.errors\")] to name the \
                 Python module of the exception class",
            );
            LitStr::new("", Span::call_site())
        }
    };
    let name = match args.name {
        Some(n) => {
            if !valid_dotted_name(&n.value()) || n.value().contains('.') {
                errors.push(
                    n.span(),
                    "`name` is a Python class name, e.g. name = \"CalibrationError\"",
                );
            }
            n
        }
        None => LitStr::new(
            &syn::ext::IdentExt::unraw(&input.ident).to_string(),
            input.ident.span(),
        ),
    };
    errors.finish()?;
    Ok(Exception {
        input,
        module,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_result_takes_ok_type_and_owns_borrows() {
        let r = |s: &str| {
            let out: ReturnType = syn::parse_str(s).unwrap();
            typed_result(&out).to_token_stream().to_string()
        };
        assert_eq!(r(""), "()");
        assert_eq!(r("-> i64"), "i64");
        assert_eq!(r("-> Result<Vec<u8>, MyErr>"), "Vec < u8 >");
        assert_eq!(r("-> std::io::Result<u8>"), "u8");
        assert_eq!(r("-> &'static str"), ":: std :: string :: String");
        assert_eq!(
            r("-> Result<&'static str, NotRun>"),
            ":: std :: string :: String"
        );
        assert_eq!(r("-> &'static [u8]"), ":: std :: vec :: Vec < u8 >");
    }

    #[test]
    fn rates_are_celerys() {
        for ok in ["10", "10/s", "10/m", "2.5/h", "0"] {
            assert!(valid_rate(ok), "{ok}");
        }
        for bad in ["", "10/d", "ten/m", "10/", "-1/s"] {
            assert!(!valid_rate(bad), "{bad}");
        }
    }

    #[test]
    fn context_and_option_are_recognized_by_path() {
        let t = |s: &str| syn::parse_str::<Type>(s).unwrap();
        assert!(is_context(&t("&Context")));
        assert!(is_context(&t("&celeriac::task::Context<'_>")));
        assert!(!is_context(&t("&mut Context")));
        assert!(!is_context(&t("Context")));
        assert!(is_option(&t("Option<i64>")));
        assert!(is_option(&t("std::option::Option<String>")));
        assert!(!is_option(&t("Optional<i64>")));
    }
}
