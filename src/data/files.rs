//! The four MNIST files: their names and the md5 sums of their published gzipped forms. Loading
//! (`mnist`) and fetching (`download`) both read this table; neither imports the other's internals.

/// The four files, by their canonical names (a `.gz` twin is accepted too).
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// md5 of the gzipped files as published (data/README.md).
pub const MD5: [&str; 4] = [
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
];
