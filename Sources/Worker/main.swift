print("neumeta-worker")
