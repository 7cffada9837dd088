"""Workers: claim queued jobs from the store, run the engine in a child process, write events back."""
