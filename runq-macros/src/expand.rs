//! The expansion: the function stays as written, and a
//! `runq::test::TestDef` describing its cases is registered with the
//! harness (through `inventory`, so no list of tests is kept by hand).
//!
//! A proc macro on one function cannot emit several libtest `#[test]`s
//! named `fn::1n2l2c1t::lowlat`: a topology spec starts with a digit and is
//! no Rust identifier, so nested modules cannot spell it. The harness
//! (`runq::test::main`, libtest's command line through libtest-mimic)
//! names the cases instead, which also lets it mark cases skipped (budget,
//! host too small) as ignored rather than passed, and lets the test binary
//! act as a VM's init.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn};

use crate::attrs::TestAttrs;

pub fn expand(attrs: TestAttrs, function: ItemFn) -> syn::Result<TokenStream> {
    check_signature(&function)?;
    let name = &function.sig.ident;
    let name_text = name.to_string();
    let topologies = &attrs.topologies;
    let profiles = attrs.profiles.iter().map(|(profile, args)| {
        quote! { (#profile, &[#(#args),*]) }
    });
    let option = |value: &Option<String>| match value {
        Some(text) => quote! { ::core::option::Option::Some(#text) },
        None => quote! { ::core::option::Option::None },
    };
    let scheduler = option(&attrs.scheduler);
    let kernel = option(&attrs.kernel);
    let duration = option(&attrs.duration);
    let memory = option(&attrs.memory);
    let timeout = option(&attrs.timeout);
    let expect_fail = option(&attrs.expect_fail);
    let host = attrs.host;
    let call = quote_spanned! {name.span()=>
        ::runq::test::__private::outcome(#name(context))
    };
    Ok(quote! {
        #function

        const _: () = {
            fn __runq_body(context: &mut ::runq::test::Context) -> ::runq::test::Outcome {
                #call
            }
            ::runq::test::__private::inventory::submit! {
                ::runq::test::TestDef {
                    name: #name_text,
                    module: ::core::module_path!(),
                    file: ::core::file!(),
                    line: ::core::line!(),
                    topologies: &[#(#topologies),*],
                    scheduler: #scheduler,
                    profiles: &[#(#profiles),*],
                    kernel: #kernel,
                    duration: #duration,
                    memory: #memory,
                    timeout: #timeout,
                    host: #host,
                    expect_fail: #expect_fail,
                    body: __runq_body,
                }
            }
        };
    })
}

/// `fn name(context: &mut runq::test::Context) -> R`: one argument, no
/// `async`, no generics. The argument's and result's types are checked by
/// the compiler against the call in the expansion.
fn check_signature(function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    if let Some(token) = &sig.asyncness {
        return Err(syn::Error::new(
            token.span(),
            "a runq test is not async: the body runs inside the guest, one case per process",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a runq test takes no generic parameters",
        ));
    }
    let usage = "a runq test takes one argument, the context: \
                 fn name(ctx: &mut runq::test::Context) -> anyhow::Result<RunReport>";
    match sig.inputs.len() {
        1 => {}
        _ => return Err(syn::Error::new(sig.paren_token.span.join(), usage)),
    }
    if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(syn::Error::new(receiver.span(), usage));
    }
    Ok(())
}
