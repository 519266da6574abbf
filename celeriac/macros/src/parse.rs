//! Read the tokens: the options of `#[celeriac::task(...)]`, the annotated function (with or
//! without a body), the `#[arg(...)]` attributes of its parameters, and the
//! `#[exception(...)]` attribute of `#[derive(celeriac::Exception)]`.
//!
//! Parsing checks the shape of each value (a string where a string is due, a number of
//! seconds, a boolean); what the values mean together, and whether the function can be a
//! task, is `validate`'s concern.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, Block, Expr, ExprLit, FnArg, Lit, LitBool, LitStr, Signature, Token};

/// Every option `#[celeriac::task]` accepts, under Celery's names.
pub(crate) const SUPPORTED: &[&str] = &[
    "name",
    "queue",
    "time_limit",
    "soft_time_limit",
    "acks_late",
    "max_retries",
    "default_retry_delay",
    "autoretry_for",
    "retry_backoff",
    "rate_limit",
    "ignore_result",
    "bind",
    "remote",
];

/// The options as written, each with the span of its value (for messages), checked for
/// their literal kind only.
#[derive(Default)]
pub(crate) struct Options {
    pub name: Option<LitStr>,
    pub queue: Option<LitStr>,
    pub time_limit: Option<Seconds>,
    pub soft_time_limit: Option<Seconds>,
    pub acks_late: Option<LitBool>,
    pub max_retries: Option<u32>,
    pub default_retry_delay: Option<Seconds>,
    pub autoretry_for: Option<Vec<LitStr>>,
    /// `Some(0)` is `retry_backoff = false`.
    pub retry_backoff: Option<(u32, Span)>,
    pub rate_limit: Option<LitStr>,
    pub ignore_result: Option<LitBool>,
    pub bind: Option<LitBool>,
    pub remote: Option<Span>,
    /// Every option given, in order, with the span of its name.
    pub given: Vec<(String, Span)>,
}

/// A number of seconds as written.
#[derive(Clone, Copy)]
pub(crate) struct Seconds {
    pub value: f64,
    pub span: Span,
}

pub(crate) fn options(attr: TokenStream) -> syn::Result<Options> {
    let mut o = Options::default();
    let parser = syn::meta::parser(|meta| {
        let path = &meta.path;
        let name = path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_else(|| path.to_token_stream().to_string().replace(' ', ""));
        let span = path.span();
        if o.given.iter().any(|(n, _)| *n == name) {
            return Err(meta.error(format!("duplicate option `{name}`")));
        }
        match name.as_str() {
            "name" => {
                o.name = Some(string(
                    &meta.value()?.parse()?,
                    "name",
                    "\"proj.tasks.add\"",
                )?)
            }
            "queue" => o.queue = Some(string(&meta.value()?.parse()?, "queue", "\"calibration\"")?),
            "rate_limit" => {
                o.rate_limit = Some(string(&meta.value()?.parse()?, "rate_limit", "\"10/m\"")?)
            }
            "time_limit" => o.time_limit = Some(seconds(&meta.value()?.parse()?, "time_limit")?),
            "soft_time_limit" => {
                o.soft_time_limit = Some(seconds(&meta.value()?.parse()?, "soft_time_limit")?)
            }
            "default_retry_delay" => {
                o.default_retry_delay =
                    Some(seconds(&meta.value()?.parse()?, "default_retry_delay")?)
            }
            "acks_late" => o.acks_late = Some(boolean(&meta.value()?.parse()?, "acks_late")?),
            "ignore_result" => {
                o.ignore_result = Some(boolean(&meta.value()?.parse()?, "ignore_result")?)
            }
            "bind" => o.bind = Some(boolean(&meta.value()?.parse()?, "bind")?),
            "max_retries" => {
                let e: Expr = meta.value()?.parse()?;
                o.max_retries = Some(match &e {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) => i.base10_parse::<u32>()?,
                    _ => {
                        return Err(syn::Error::new(
                            e.span(),
                            "`max_retries` must be a whole number, e.g. max_retries = 5",
                        ));
                    }
                });
            }
            "retry_backoff" => {
                let e: Expr = meta.value()?.parse()?;
                let factor = match &e {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(b), ..
                    }) => u32::from(b.value),
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) => i.base10_parse::<u32>()?,
                    _ => {
                        return Err(syn::Error::new(
                            e.span(),
                            "`retry_backoff` must be `true`, `false` or a factor in seconds, \
                             e.g. retry_backoff = 2",
                        ));
                    }
                };
                o.retry_backoff = Some((factor, e.span()));
            }
            "autoretry_for" => {
                let e: Expr = meta.value()?.parse()?;
                o.autoretry_for = Some(string_list(&e)?);
            }
            "remote" => {
                // A flag; `remote = true` is accepted too, `remote = false` means a local task.
                if meta.input.peek(Token![=]) {
                    if boolean(&meta.value()?.parse()?, "remote")?.value {
                        o.remote = Some(span);
                    }
                } else {
                    o.remote = Some(span);
                }
            }
            _ => {
                let list: Vec<String> = SUPPORTED.iter().map(|s| format!("`{s}`")).collect();
                return Err(syn::Error::new(
                    span,
                    format!(
                        "unsupported option `{name}`; supported: {}",
                        list.join(", ")
                    ),
                ));
            }
        }
        o.given.push((name, span));
        Ok(())
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(o)
}

fn string(e: &Expr, what: &str, example: &str) -> syn::Result<LitStr> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        _ => Err(syn::Error::new(
            e.span(),
            format!("`{what}` must be a string literal, e.g. {what} = {example}"),
        )),
    }
}

fn seconds(e: &Expr, what: &str) -> syn::Result<Seconds> {
    let value = match e {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<u64>()? as f64,
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse::<f64>()?,
        _ => {
            return Err(syn::Error::new(
                e.span(),
                format!("`{what}` must be a number of seconds, e.g. {what} = 30 or {what} = 2.5"),
            ));
        }
    };
    Ok(Seconds {
        value,
        span: e.span(),
    })
}

fn boolean(e: &Expr, what: &str) -> syn::Result<LitBool> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.clone()),
        _ => Err(syn::Error::new(
            e.span(),
            format!("`{what}` must be `true` or `false`"),
        )),
    }
}

fn string_list(e: &Expr) -> syn::Result<Vec<LitStr>> {
    let shape = || {
        syn::Error::new(
            e.span(),
            "`autoretry_for` must be a list of exception type names, \
             e.g. autoretry_for = [\"ValueError\", \"myapp.errors.Busy\"]",
        )
    };
    let Expr::Array(a) = e else {
        return Err(shape());
    };
    a.elems
        .iter()
        .map(|x| match x {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Ok(s.clone()),
            _ => Err(syn::Error::new(
                x.span(),
                "`autoretry_for` lists exception type names as strings, e.g. \"ValueError\"",
            )),
        })
        .collect()
}

/// The annotated function: `fn` with a body, or a bare signature ending in `;` (what a
/// `remote` task declares; syn's `ItemFn` requires a body).
pub(crate) struct TaskFn {
    pub attrs: Vec<Attribute>,
    pub vis: syn::Visibility,
    /// The signature with `#[arg(...)]` removed from its parameters.
    pub sig: Signature,
    pub body: Option<Box<Block>>,
    pub semi: Option<Token![;]>,
    /// The `#[arg(...)]` attributes of each input, in order.
    pub arg_attrs: Vec<Vec<Attribute>>,
}

impl Parse for TaskFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: syn::Visibility = input.parse()?;
        if !(input.peek(Token![fn])
            || input.peek(Token![async])
            || input.peek(Token![const])
            || input.peek(Token![unsafe])
            || input.peek(Token![extern]))
        {
            return Err(input.error(
                "#[celeriac::task] applies to a function: `fn name(args) -> T { ... }`, \
                 or `fn name(args) -> T;` with `remote`",
            ));
        }
        let mut sig: Signature = input.parse()?;
        let (body, semi) = if input.peek(Token![;]) {
            (None, Some(input.parse()?))
        } else {
            (Some(Box::new(input.parse()?)), None)
        };
        let mut arg_attrs = Vec::new();
        for input in sig.inputs.iter_mut() {
            let attrs = match input {
                FnArg::Typed(t) => &mut t.attrs,
                FnArg::Receiver(r) => &mut r.attrs,
            };
            let (ours, theirs): (Vec<_>, Vec<_>) =
                attrs.drain(..).partition(|a| a.path().is_ident("arg"));
            *attrs = theirs;
            arg_attrs.push(ours);
        }
        Ok(TaskFn {
            attrs,
            vis,
            sig,
            body,
            semi,
            arg_attrs,
        })
    }
}

impl ToTokens for TaskFn {
    /// The function as written, minus `#[arg(...)]`; nothing for a bare signature (which is
    /// not an item Rust accepts).
    fn to_tokens(&self, tokens: &mut TokenStream) {
        if let Some(body) = &self.body {
            for a in &self.attrs {
                a.to_tokens(tokens);
            }
            self.vis.to_tokens(tokens);
            self.sig.to_tokens(tokens);
            body.to_tokens(tokens);
        }
    }
}

pub(crate) fn task_fn(item: TokenStream) -> syn::Result<TaskFn> {
    syn::parse2(item)
}

/// `#[arg(default = <expr>)]` of one parameter.
pub(crate) fn arg_default(attrs: &[Attribute]) -> syn::Result<Option<Expr>> {
    let mut default = None;
    for attr in attrs {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("default") {
                if default.is_some() {
                    return Err(meta.error("duplicate `default`"));
                }
                default = Some(meta.value()?.parse::<Expr>()?);
                Ok(())
            } else {
                Err(meta.error(
                    "unsupported `arg` option; supported: `default = <expr>`, \
                     e.g. #[arg(default = 10)]",
                ))
            }
        })?;
    }
    Ok(default)
}

/// `#[exception(module = "...", name = "...")]` as written.
pub(crate) struct ExceptionArgs {
    pub module: Option<LitStr>,
    pub name: Option<LitStr>,
}

pub(crate) fn exception_args(attrs: &[Attribute]) -> syn::Result<ExceptionArgs> {
    let mut args = ExceptionArgs {
        module: None,
        name: None,
    };
    for attr in attrs.iter().filter(|a| a.path().is_ident("exception")) {
        attr.parse_nested_meta(|meta| {
            let (slot, what, example) = if meta.path.is_ident("module") {
                (&mut args.module, "module", "\"myapp.errors\"")
            } else if meta.path.is_ident("name") {
                (&mut args.name, "name", "\"CalibrationError\"")
            } else {
                return Err(
                    meta.error("unsupported `exception` option; supported: `module`, `name`")
                );
            };
            if slot.is_some() {
                return Err(meta.error(format!("duplicate option `{what}`")));
            }
            let e: Expr = meta.value()?.parse()?;
            *slot = Some(string(&e, what, example)?);
            Ok(())
        })?;
    }
    Ok(args)
}
