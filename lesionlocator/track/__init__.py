"""Track: propagate each lesion's mask to the next session, segment it there, assign its status, find
new-lesion candidates, draw QC figures."""
