// A parameter's type must come from JSON (and go to it, for the client stubs).
struct Frame {
    pixels: Vec<u16>,
}

#[celeriac::task(name = "img.measure")]
fn measure(frame: Frame) -> usize {
    frame.pixels.len()
}

fn main() {}
