"""The HTTP gateway between WeChat mini programs and the synthesis workers."""
