# Control: locks, leases, fencing, handover, actuation, resource events.
# (Being built in issue 4; until then the agent answers link messages only.)


class Control:
    def __init__(self, link, resources, clock, board):
        self.link = link
        self.resources = resources
        self.clock = clock

    def handle(self, mid, rid):
        return False

    def host_seen(self, now):
        pass

    def tick(self, now):
        pass

    def sleep_ms(self, longest):
        return longest

    def stop(self):
        for r in self.resources:
            r.safe()
