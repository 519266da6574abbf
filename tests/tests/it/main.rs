mod golden;
mod interop;
mod locks;
