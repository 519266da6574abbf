// A context parameter without `bind = true` would be read as an argument.
use celeriac::task::Context;

#[celeriac::task(name = "img.poll")]
fn poll(ctx: &Context, job: String) -> String {
    format!("{job} {}", ctx.id())
}

fn main() {}
