"""Blue-green (shipyard.bluegreen): the routing file the edge reloads names the live colour of the
host's release state, and the live colour's services run the live version's image."""

import pytest

from shipyard import image_plan, bluegreen, topology


def test_the_routing_file_sends_users_to_the_live_colour(target):
    routing = [i for i in topology.build(target.settings).instances_on(target.rendered.host)
               if i.service.routing_mount and i.component.release_routing]
    if not routing:
        pytest.skip("no routing service on this host")
    state = target.release
    path = f"{bluegreen.release_dir(target.settings.deploy_root, target.settings.name)}/{bluegreen.ROUTING_DIR}/" \
           f"{bluegreen.ROUTING_FILE}"
    f = target.host.file(path)
    assert f.mode == 0o644 and f.uid == 0
    assert f.content == routing[0].component.release_routing(state.live, bluegreen.other(state.live))


def test_the_live_colour_runs_the_live_version(target):
    coloured = [i for i in topology.build(target.settings).instances_on(target.rendered.host) if i.colour == target.release.live]
    if not coloured:
        pytest.skip("no coloured service on this host")
    variables = target.release.env_variables()
    for inst in coloured:
        ref = image_plan.resolved_ref(image_plan.versioned_ref(target.settings, inst.component, inst.service.image, inst.colour),
                                  variables)
        assert target.container_of(inst.name)["Config"]["Image"] == ref, inst.name
