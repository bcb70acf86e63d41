"""The engine: a task DAG dispatched depth-first onto Ray actors; it knows tasks, not products."""
