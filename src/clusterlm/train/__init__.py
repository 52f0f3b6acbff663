"""clusterlm.train"""
