"""Starting files of the exercises (copied into a workspace by `minillm exercises init`)."""
