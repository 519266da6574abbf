mod canvas;
mod golden;
mod interop;
mod locks;
mod worker;
