//! The `#[rule]` attribute of `wasmrule-guest`.
//!
//! It leaves the function as it is and adds, for `wasm32` targets only, a hidden module
//! with the ABI exports (`docs/abi.md`): the version marker, the manifest, the input
//! allocator and the event entry point. A function of one argument (the event) is a
//! rule of ABI v1; one of two (the event and a `&mut Context`) is a rule of ABI v2,
//! which may read Redis and returns actions. Misuse (no filters, an invalid filter, a name
//! with odd characters, an `async` or generic function) is a compile error pointing at
//! the mistake; a wrong signature is a type error at the function.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprArray, ExprLit, ItemFn, Lit, LitStr, MetaNameValue, Token};

/// Turns `fn(&Event) -> R` (ABI v1) or `fn(&Event, &mut Context) -> R` (ABI v2) into a
/// wasmrule rule.
///
/// Arguments:
/// - `filters = ["topic/+", "$events/client_disconnected", ...]` (required): the MQTT
///   topic filters and event topics the rule receives.
/// - `name = "my-rule"` (optional): defaults to the crate name.
/// - `needs = ["embedded-broker"]` (optional): what the rule needs of the runtime; a
///   runtime that lacks it refuses the rule at load, naming it (`embedded-broker`: the
///   rule's subscribe, unsubscribe or deliver actions, or its events, need wasmrule to
///   be the broker).
///
/// For v1, `R` is `Vec<Command>`, `Command`, `Option<Command>`, `()`, or a `Result` of
/// one of those with an error that implements `Display` (`IntoOutput`); for v2, the
/// same with `Action` in place of `Command` (`IntoActions`).
#[proc_macro_attribute]
pub fn rule(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.into_compile_error().into(),
    }
}

struct Args {
    name: String,
    filters: Vec<String>,
    needs: Vec<String>,
}

/// What a rule may say it needs (`needs = [..]`), as the runtime knows them.
const NEEDS: [&str; 1] = ["embedded-broker"];

fn expand(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let func: ItemFn = syn::parse2(item)
        .map_err(|e| syn::Error::new(e.span(), "#[rule] goes on a function `fn(&Event) -> ...`"))?;
    check_signature(&func)?;
    let args = parse_args(attr)?;
    let ident = &func.sig.ident;
    let manifest = manifest_json(&args);
    let manifest = LitStr::new(&manifest, Span::call_site());

    let v2 = func.sig.inputs.len() == 2;
    let (check, marker, on_event) = if v2 {
        (
            quote!(check_handler_v2),
            quote!(wasmrule_abi_version_2),
            quote!(on_event_v2),
        )
    } else {
        (
            quote!(check_handler),
            quote!(wasmrule_abi_version_1),
            quote!(on_event),
        )
    };
    let version = if v2 { 2 } else { 1 };
    let marker_doc =
        format!("Marks the module as built for rule ABI version {version}; never called.");

    Ok(quote! {
        #func

        // Type-checks the function on every target, so `cargo check` on the host
        // reports a wrong signature too.
        const _: () = ::wasmrule_guest::__private::#check(&#ident);

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __wasmrule_exports {
            #[doc = #marker_doc]
            #[unsafe(no_mangle)]
            pub extern "C" fn #marker() {}

            #[unsafe(no_mangle)]
            pub extern "C" fn wasmrule_manifest() -> u64 {
                ::wasmrule_guest::__private::static_bytes(#manifest.as_bytes())
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wasmrule_alloc(len: u32) -> u32 {
                ::wasmrule_guest::__private::alloc(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wasmrule_on_event(ptr: u32, len: u32) -> u64 {
                // SAFETY: the host passes back a buffer from `wasmrule_alloc`, once.
                unsafe { ::wasmrule_guest::__private::#on_event(ptr, len, super::#ident) }
            }
        }
    })
}

fn check_signature(func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(a.span(), "a rule cannot be `async`"));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a rule cannot be generic: it takes `&Event`",
        ));
    }
    if !(1..=2).contains(&sig.inputs.len()) {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "a rule takes `event: &Event` (ABI v1), or `event: &Event, ctx: &mut Context` \
             to read Redis and return actions (ABI v2)",
        ));
    }
    Ok(())
}

fn parse_args(attr: proc_macro2::TokenStream) -> syn::Result<Args> {
    let list = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(attr.clone())?;
    let mut name = None;
    let mut filters = None;
    let mut needs = Vec::new();
    for nv in &list {
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "name" => {
                let s = string_lit(&nv.value)?;
                let v = s.value();
                let ok = !v.is_empty()
                    && v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    return Err(syn::Error::new(
                        s.span(),
                        "a rule name is 1 to 128 characters of A-Z a-z 0-9 - _ .",
                    ));
                }
                name = Some(v);
            }
            "filters" => filters = Some(parse_filters(&nv.value)?),
            "needs" => needs = parse_needs(&nv.value)?,
            _ => {
                return Err(syn::Error::new(
                    nv.path.span(),
                    "unknown argument; #[rule] takes `filters = [..]`, `name = \"..\"` and \
                     `needs = [..]`",
                ));
            }
        }
    }
    let filters = filters.ok_or_else(|| {
        syn::Error::new(
            Span::call_site(),
            "#[rule] needs `filters = [\"topic/+\", ...]`: the topics the rule receives",
        )
    })?;
    let name = match name {
        Some(n) => n,
        None => std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "rule".to_owned()),
    };
    Ok(Args {
        name,
        filters,
        needs,
    })
}

fn parse_needs(value: &Expr) -> syn::Result<Vec<String>> {
    let Expr::Array(ExprArray { elems, .. }) = value else {
        return Err(syn::Error::new(
            value.span(),
            "`needs` is an array of string literals: [\"embedded-broker\"]",
        ));
    };
    elems
        .iter()
        .map(|e| {
            let s = string_lit(e)?;
            let v = s.value();
            if !NEEDS.contains(&v.as_str()) {
                return Err(syn::Error::new(
                    s.span(),
                    format!("`{v}` is not something a rule can need; known: {NEEDS:?}"),
                ));
            }
            Ok(v)
        })
        .collect()
}

fn parse_filters(value: &Expr) -> syn::Result<Vec<String>> {
    let Expr::Array(ExprArray { elems, .. }) = value else {
        return Err(syn::Error::new(
            value.span(),
            "`filters` is an array of string literals: [\"a/+\", \"b/#\"]",
        ));
    };
    if elems.is_empty() {
        return Err(syn::Error::new(
            value.span(),
            "`filters` is empty: the rule would never run",
        ));
    }
    elems
        .iter()
        .map(|e| {
            let s = string_lit(e)?;
            let v = s.value();
            if !wasmrule_topic::is_valid_filter(&v) {
                return Err(syn::Error::new(
                    s.span(),
                    format!(
                        "`{v}` is not a valid MQTT topic filter: `+` and `#` must be whole \
                         levels, `#` only last"
                    ),
                ));
            }
            Ok(v)
        })
        .collect()
}

fn string_lit(e: &Expr) -> syn::Result<&LitStr> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s),
        other => Err(syn::Error::new(other.span(), "expected a string literal")),
    }
}

fn manifest_json(args: &Args) -> String {
    let mut s = String::from("{\"name\":");
    push_json_str(&mut s, &args.name);
    s.push_str(",\"version\":");
    push_json_str(
        &mut s,
        &std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
    );
    s.push_str(",\"filters\":[");
    for (i, f) in args.filters.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_json_str(&mut s, f);
    }
    s.push(']');
    if !args.needs.is_empty() {
        s.push_str(",\"needs\":[");
        for (i, n) in args.needs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            push_json_str(&mut s, n);
        }
        s.push(']');
    }
    s.push_str(",\"sdk\":\"wasmrule-guest-rust/");
    s.push_str(env!("CARGO_PKG_VERSION"));
    s.push_str("\"}");
    s
}

fn push_json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmrule_topic::is_valid_filter as valid_filter;

    #[test]
    fn filters_validated_like_the_runtime() {
        assert!(valid_filter("a/+/#"));
        assert!(valid_filter("$events/client_disconnected"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a+"));
        assert!(!valid_filter(""));
    }

    #[test]
    fn manifest_is_json() {
        let m = manifest_json(&Args {
            name: "r".into(),
            filters: vec!["a/\"b".into()],
            needs: vec!["embedded-broker".into()],
        });
        assert!(m.starts_with(r#"{"name":"r","version":"#), "{m}");
        assert!(
            m.contains(r#""filters":["a/\"b"],"needs":["embedded-broker"]"#),
            "{m}"
        );
    }

    #[test]
    fn misuse_is_an_error() {
        let item: proc_macro2::TokenStream = quote!(
            fn f(e: &Event) -> Vec<Command> {
                vec![]
            }
        );
        let err =
            |attr: proc_macro2::TokenStream| expand(attr, item.clone()).unwrap_err().to_string();
        assert!(err(quote!()).contains("needs `filters"));
        assert!(err(quote!(filters = [])).contains("is empty"));
        assert!(err(quote!(filters = ["a/#/b"])).contains("not a valid MQTT topic filter"));
        assert!(err(quote!(filters = ["a"], name = "bad name")).contains("rule name"));
        assert!(err(quote!(filters = ["a"], nmae = "x")).contains("unknown argument"));
        assert!(err(quote!(filters = ["a"], needs = ["a-gpu"])).contains("not something"));
        let asyncfn = quote!(
            async fn f(e: &Event) {}
        );
        assert!(
            expand(quote!(filters = ["a"]), asyncfn)
                .unwrap_err()
                .to_string()
                .contains("async")
        );
        assert!(expand(quote!(filters = ["a"]), item).is_ok());
        let three = quote!(
            fn f(e: &Event, c: &mut Context, x: u32) {}
        );
        let e = expand(quote!(filters = ["a"]), three)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ABI v2"), "{e}");
    }

    #[test]
    fn the_marker_follows_the_arguments() {
        let v1 = quote!(
            fn f(e: &Event) {}
        );
        let v2 = quote!(
            fn f(e: &Event, ctx: &mut Context) {}
        );
        let out = |item| expand(quote!(filters = ["a"]), item).unwrap().to_string();
        let (v1, v2) = (out(v1), out(v2));
        assert!(v1.contains("wasmrule_abi_version_1") && !v1.contains("version_2"));
        assert!(v2.contains("wasmrule_abi_version_2") && !v2.contains("version_1"));
        assert!(v2.contains("on_event_v2") && v2.contains("check_handler_v2"));
    }
}
