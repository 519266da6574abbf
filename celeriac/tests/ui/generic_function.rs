// Arguments arrive as JSON: no type to pick a generic parameter from.
#[celeriac::task(name = "img.echo")]
fn echo<T: serde::Serialize>(value: T) -> T {
    value
}

fn main() {}
