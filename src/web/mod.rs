//! The tiny_http listener for emailed links (issue 3 builds it out).
