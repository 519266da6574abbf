// A task is a free function.
struct Pipeline;

impl Pipeline {
    #[celeriac::task(name = "img.run")]
    fn run(&self, file: String) -> String {
        file
    }
}

fn main() {}
