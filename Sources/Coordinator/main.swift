print("neumeta-coordinator")
